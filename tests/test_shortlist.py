"""Shortlist: round trip, duplicates, notes/tags, concurrent writers (threads and processes), restarts, migrations."""
from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from core import shortlist as S
from core.errors import InvalidInputError
from core.settings import REPO_ROOT

CATIONS = ["Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba", "Ag"]
ANIONS = ["F", "Cl", "Br", "I", "O", "S"]


FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def rocksalt(cation: str = "Na", anion: str = "Cl", a: float = 5.64) -> Structure:
    """Conventional rock-salt cell (8 sites): cations on fcc sites, anions shifted by (½, 0, 0)."""
    anion_sites = [[(x + 0.5) % 1, y, z] for x, y, z in FCC]
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, FCC + anion_sites)


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def db(tmp_path):
    return tmp_path / "shortlist.sqlite"


def test_add_get_round_trip_keeps_structure_properties_notes_tags(db):
    sl = S.Shortlist(db)
    s = rocksalt()
    props = {"e_above_hull": np.float32(0.025), "band_gap_ev": 5.1, "eps_elec": float("nan"),
             "fom_ev": None, "struct_valid": np.bool_(True), "forces": np.zeros((2, 3))}
    i = sl.add(s, properties=props, source="rl-fom", token_string="225-a-Na-...", notes="nice gap",
               tags="salt, cubic ,, salt")
    e = sl.get(i)
    assert StructureMatcher().fit(e.structure, s)
    assert np.allclose(e.structure.lattice.matrix, s.lattice.matrix)
    assert (e.formula, e.spacegroup, e.spacegroup_symbol, e.nsites) == ("NaCl", 225, "Fm-3m", 8)
    assert e.tags == ("salt", "cubic") and e.notes == "nice gap" and e.source == "rl-fom"
    assert e.properties["e_above_hull"] == pytest.approx(0.025)
    assert e.properties["struct_valid"] is True and np.isnan(e.properties["eps_elec"])
    assert e.properties["fom_ev"] is None and e.properties["forces"] == [[0.0] * 3] * 2
    assert e.name == f"{i:04d}_NaCl_sg225"


def test_list_flattens_properties_and_keeps_base_columns(db):
    sl = S.Shortlist(db)
    assert list(sl.list().columns) == list(S._COLUMNS) and len(sl.list()) == 0
    a = sl.add(rocksalt(), properties={"e_above_hull": 0.0, "formula": "NaCl", "model": {"mlip": "m3gnet"}})
    b = sl.add(rocksalt("K", "Br", 6.6), properties={"e_above_hull": 0.3}, tags=["x"])
    df = sl.list()
    assert list(df["id"]) == [a, b] and list(df["formula"]) == ["NaCl", "KBr"]
    assert list(df["e_above_hull"]) == [0.0, 0.3]
    assert df.loc[0, "property.formula"] == "NaCl"          # a property named like a base column is kept aside
    assert df.loc[0, "model.mlip"] == "m3gnet"
    assert list(df["tags"]) == [[], ["x"]]
    assert list(df["spacegroup"]) == [225, 225]


def test_duplicates_are_reported_not_doubled(db):
    sl = S.Shortlist(db)
    first = sl.add(rocksalt(), source="base", token_string="T1")
    # the same crystal, scaled and in its primitive cell, from another source
    again = rocksalt(a=5.7).get_primitive_structure()
    with pytest.raises(S.DuplicateEntryError, match="already on the shortlist as #") as err:
        sl.add(again, source="rl-fom")
    assert err.value.existing_id == first and isinstance(err.value, InvalidInputError)
    with pytest.raises(S.DuplicateEntryError):           # same token string from the same source
        sl.add(rocksalt("K", "Cl"), source="base", token_string="T1")
    sl.add(rocksalt("K", "Cl"), source="rl-fom", token_string="T1")   # same string, other model: new
    assert sl.find_duplicate(cscl()) is None and sl.find_duplicate(again) == first
    sl.add(again, allow_duplicate=True)
    assert len(sl) == 3


def test_update_and_remove(db):
    sl = S.Shortlist(db)
    i = sl.add(rocksalt(), properties={"e_above_hull": 0.1}, tags=["a"])
    sl.update(i, notes="check phonons", tags="b, c", properties={"feasibility": {"smact": True}})
    e = sl.get(i)
    assert e.notes == "check phonons" and e.tags == ("b", "c")
    assert e.properties == {"e_above_hull": 0.1, "feasibility": {"smact": True}}
    assert e.updated_at >= e.added_at
    assert sl.remove(i) is True and sl.remove(i) is False and len(sl) == 0
    with pytest.raises(InvalidInputError, match="no shortlist entry"):
        sl.get(i)
    with pytest.raises(InvalidInputError, match="no shortlist entry"):
        sl.update(i, notes="x")


def test_entries_by_ids_in_the_given_order(db):
    sl = S.Shortlist(db)
    ids = [sl.add(rocksalt(c, "F")) for c in CATIONS[:3]]
    assert [e.id for e in sl.entries([ids[2], 999, ids[0]])] == [ids[2], ids[0]]
    assert [e.id for e in sl.entries()] == ids


def test_bad_input_is_refused_with_a_message(db):
    sl = S.Shortlist(db)
    with pytest.raises(InvalidInputError, match="pymatgen Structure"):
        sl.add("NaCl")
    with pytest.raises(InvalidInputError, match="finite"):
        sl.add(Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]]))
    with pytest.raises(InvalidInputError, match="dict"):
        sl.add(rocksalt(), properties=[1, 2])
    assert len(sl) == 0


def test_default_location_is_the_app_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(tmp_path / "appdata"))
    sl = S.Shortlist()
    assert sl.path == tmp_path / "appdata" / S.DB_NAME and sl.path.exists()
    with sqlite3.connect(sl.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------------------------------------ concurrency
def _add_batch(sl: S.Shortlist, k: int, source: str) -> str:
    """Writer k adds four crystals of its own, then the one CsCl every writer tries to add."""
    for anion in ANIONS[:4]:
        sl.add(rocksalt(CATIONS[k], anion), source=source)
    try:
        sl.add(cscl(), source=source)
        return "added"
    except S.DuplicateEntryError:
        return "duplicate"


def test_threads_adding_at_once(db):
    sl = S.Shortlist(db)                 # one object shared by all threads, as in a Streamlit server
    outcomes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            outcomes.append(_add_batch(sl, k, f"thread{k}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(outcomes) == ["added"] + ["duplicate"] * 5
    df = S.Shortlist(db).list()
    assert len(df) == 6 * 4 + 1 and df["id"].is_unique


def _process_worker(path: str, k: int, queue, barrier) -> None:
    try:
        barrier.wait(timeout=60)
        # each process opens (and races to create) the database
        queue.put(_add_batch(S.Shortlist(path), k, f"proc{k}"))
    except BaseException as exc:
        queue.put(f"error: {exc!r}")


def test_processes_adding_at_once(db):
    ctx = multiprocessing.get_context("fork")
    queue, barrier = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=_process_worker, args=(str(db), k, queue, barrier)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    results = sorted(queue.get(timeout=5) for _ in procs)
    assert results == ["added"] + ["duplicate"] * 3, results
    df = S.Shortlist(db).list()
    assert len(df) == 4 * 4 + 1
    assert set(df["formula"]) >= {"CsCl", "LiF", "NaCl", "KBr", "RbI"}


def test_survives_a_restart_in_a_new_process(db):
    sl = S.Shortlist(db)
    i = sl.add(rocksalt(), properties={"e_above_hull": 0.01}, notes="keep me", tags=["stable"])
    script = textwrap.dedent(f"""
        from core.shortlist import Shortlist
        from pymatgen.core import Lattice, Structure
        sl = Shortlist({str(db)!r})
        e = sl.get({i})
        print(e.formula, e.notes, ",".join(e.tags), e.properties["e_above_hull"], len(e.structure))
        sl.add(Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), source="child")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NaCl", "keep", "me", "stable", "0.01", "8"]
    assert list(sl.list()["formula"]) == ["NaCl", "CsCl"]


# ------------------------------------------------------------------------------------------------ schema
def test_migration_adds_a_column_and_keeps_entries(db, monkeypatch):
    i = S.Shortlist(db).add(rocksalt(), properties={"e_above_hull": 0.0})
    assert S.Shortlist(db).schema_version() == S.SCHEMA_VERSION
    later = S.MIGRATIONS + (("ALTER TABLE entries ADD COLUMN feasibility TEXT NOT NULL DEFAULT '{}'",),)
    monkeypatch.setattr(S, "MIGRATIONS", later)
    monkeypatch.setattr(S, "SCHEMA_VERSION", len(later))
    sl = S.Shortlist(db)
    assert sl.schema_version() == S.SCHEMA_VERSION
    assert sl.get(i).properties == {"e_above_hull": 0.0}
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT feasibility FROM entries WHERE id = ?", (i,)).fetchone() == ("{}",)
    sl.add(cscl())                        # inserts still work with the new column's default
    S.Shortlist(db)                       # reopening does not migrate twice
    assert sl.schema_version() == S.SCHEMA_VERSION and len(sl) == 2


# ------------------------------------------------------------------------------------------------ damage
def _damaged_copy(db, n=40):
    """A real shortlist of ``n`` CsCl entries (notes carry a marker) with one table page overwritten by
    noise; returns (ids, the ids stored on that page, the entries as stored before)."""
    sl = S.Shortlist(db)
    ids = [sl.add(Structure(Lattice.cubic(4 + 0.01 * k), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                  allow_duplicate=True, notes=f"marker-{k:04d}-end", tags=["t; x", f"k{k}"]) for k in range(n)]
    before = {e.id: e for e in sl.entries()}
    with sqlite3.connect(db) as con:               # everything into the main file, as after a clean shutdown
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    page_of = {i: data.find(f"marker-{k:04d}-end".encode()) // page_size for k, i in enumerate(ids)}
    victim = page_of[ids[n // 2]]
    lost = sorted(i for i, p in page_of.items() if p == victim)
    assert 0 < len(lost) < n // 4                 # a leaf page holding a few entries, not the first page
    data[victim * page_size:(victim + 1) * page_size] = np.random.default_rng(0).bytes(page_size)
    db.write_bytes(bytes(data))
    return ids, lost, before


def test_a_damaged_page_is_reported_never_written_and_salvaged(db, tmp_path):
    ids, lost, before = _damaged_copy(db)
    digest = db.read_bytes()
    with pytest.raises(S.DamagedShortlistError) as err:
        S.Shortlist(db)
    message = str(err.value)
    assert str(db) in message and "--salvage" in message and "mv " in message
    with pytest.raises(S.DamagedShortlistError):
        S.Shortlist(db, read_only=True)
    assert db.read_bytes() == digest                # opening wrote nothing into it
    out = tmp_path / "recovered.sqlite"
    report = S.salvage(db, out)
    assert report.findings and sorted(report.unreadable) == lost
    assert report.recovered == [i for i in ids if i not in lost]
    back = S.Shortlist(out)
    assert back.check() == [] and [e.id for e in back.entries()] == report.recovered
    for entry in back.entries():
        old = before[entry.id]
        assert (entry.notes, entry.tags, entry.formula, entry.properties) == (old.notes, old.tags, old.formula,
                                                                              old.properties)
        assert StructureMatcher().fit(entry.structure, old.structure)
    assert back.find_duplicate(before[ids[0]].structure) == ids[0]    # fingerprints came along
    assert db.read_bytes() == digest
    with pytest.raises(InvalidInputError, match="exists"):
        S.salvage(db, out)                          # never overwrites


def test_shortlist_command_checks_and_salvages(db, tmp_path):
    ids, lost, _ = _damaged_copy(db, n=30)
    run = lambda *a: subprocess.run([sys.executable, "-m", "core", "shortlist", "--db", str(db), *a],
                                    capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    check = run("--check")
    assert check.returncode == 2 and check.stderr.count("error:") == 1 and "Traceback" not in check.stderr
    assert f"{len(ids) - len(lost)} entries readable" in check.stdout
    out = tmp_path / "r.sqlite"
    done = run("--salvage", str(out))
    assert done.returncode == 0, done.stderr
    assert "integrity check ok" not in done.stdout and f"{len(ids) - len(lost)} entries recovered" in done.stdout
    assert len(S.Shortlist(out)) == len(ids) - len(lost) and S.check_file(out) == []


def test_not_a_database_names_the_file(tmp_path):
    path = tmp_path / "shortlist.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(S.DamagedShortlistError, match=str(path)):
        S.Shortlist(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


# ------------------------------------------------------------------------------------------------ edits, types, csv
def test_edits_are_saved_or_reported_as_conflicts(db):
    sl = S.Shortlist(db)
    i = sl.add(rocksalt(), notes="first", tags=["a"])
    sl.add(cscl())                                   # another session adds meanwhile: not a conflict
    sl.update(i, notes="mine", tags="a, b", expected={"notes": "first", "tags": ["a"]})
    assert (sl.get(i).notes, sl.get(i).tags) == ("mine", ("a", "b"))
    sl.update(i, notes="theirs")                     # another session saves a note
    with pytest.raises(S.EditConflictError, match=f"#{i}: notes changed") as err:
        sl.update(i, notes="late", expected={"notes": "mine", "tags": "a, b"})
    assert err.value.current == {"notes": "theirs", "tags": ("a", "b")} and sl.get(i).notes == "theirs"
    sl.update(i, properties={"x": 1}, expected={"tags": ("a", "b")})   # properties from Assess do not conflict
    sl.remove(i)
    with pytest.raises(InvalidInputError, match="removed in another session"):
        sl.update(i, notes="gone", expected={"notes": "theirs"})


@pytest.mark.parametrize("call, message", [
    (lambda sl: sl.add(rocksalt(), tags=5), "tags must be text"),
    (lambda sl: sl.add(rocksalt(), tags=["ok", 3]), "each tag must be text"),
    (lambda sl: sl.add(rocksalt(), notes={}), "notes must be text"),
    (lambda sl: sl.add(rocksalt(), source=7), "source must be text"),
    (lambda sl: sl.remove("abc"), "whole number"),
    (lambda sl: sl.remove(2**70), "no shortlist entry"),
    (lambda sl: sl.remove(True), "whole number"),
    (lambda sl: sl.get(1.5), "whole number"),
    (lambda sl: sl.update(1, notes=["x"]), "notes must be text"),
    (lambda sl: sl.update(1, expected={"structure": 1}), "expected must map"),
    (lambda sl: sl.entries(["1"]), "whole number"),
])
def test_wrong_argument_types_get_typed_errors(db, call, message):
    sl = S.Shortlist(db)
    sl.add(cscl())
    with pytest.raises(InvalidInputError, match=message):
        call(sl)
    assert len(sl) == 1 and sl.get(np.int64(1)).formula == "CsCl"


def test_csv_round_trips_tags_holding_separators(db):
    import io
    import json

    import pandas as pd

    from core.export import properties_csv

    sl = S.Shortlist(db)
    tags = ["a; b", 'quote "q"', "comma-free", "ünïcode ✓"]
    sl.add(rocksalt(), tags=tags, notes="line one\nline two")
    back = pd.read_csv(io.BytesIO(properties_csv(sl.list())))
    assert json.loads(back.loc[0, "tags"]) == tags and back.loc[0, "notes"] == "line one\nline two"


def test_read_only_opening_takes_no_lock_and_refuses_changes(db):
    S.Shortlist(db).add(rocksalt())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")                # another process holds the write lock
    try:
        assert len(S.Shortlist(db)) == 1             # opening an up-to-date file does not wait for it
        ro = S.Shortlist(db, read_only=True)
        assert ro.get(1).formula == "NaCl" and len(ro.list()) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with pytest.raises(InvalidInputError, match="read-only"):
        ro.add(cscl())
    with pytest.raises(InvalidInputError, match="read-only"):
        ro.remove(1)
    assert len(S.Shortlist(db)) == 1
    with pytest.raises(S.MissingResourceError):
        S.Shortlist(db.parent / "absent.sqlite", read_only=True)


def test_duplicate_check_compares_only_same_fingerprint_entries(db, monkeypatch):
    sl = S.Shortlist(db)
    # 30 same-formula entries that are other crystals: strained cells (tetragonal, P4/mmm), not rock salt
    for k in range(30):
        s = rocksalt()
        s.lattice = Lattice.tetragonal(5.64, 5.64 * (1.2 + 0.02 * k))
        sl.add(s, allow_duplicate=True)
    first = sl.add(rocksalt(a=5.5))
    fits = []
    real_fit = StructureMatcher.fit
    monkeypatch.setattr(StructureMatcher, "fit", lambda self, a, b, **kw: fits.append(1) or real_fit(self, a, b, **kw))
    with pytest.raises(S.DuplicateEntryError) as err:
        sl.add(rocksalt(a=5.9).get_primitive_structure())
    assert err.value.existing_id == first and len(fits) == 1   # was: every NaCl entry until the match
    with sqlite3.connect(db) as con:
        plan = " ".join(r[-1] for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM entries WHERE fingerprint = ? AND id > ?", ("x", 0)))
    assert "entries_fingerprint" in plan


def test_migration_from_schema_1_fingerprints_old_entries(db):
    with sqlite3.connect(db) as con:                 # a database written by the first release
        for statement in S.MIGRATIONS[0]:
            con.execute(statement)
        con.execute("PRAGMA user_version = 1")
        s = rocksalt()
        con.execute("INSERT INTO entries (added_at, updated_at, formula, nsites, structure) VALUES (?, ?, ?, ?, ?)",
                    ("t", "t", "NaCl", 8, s.to_json()))
    sl = S.Shortlist(db)
    assert sl.schema_version() == S.SCHEMA_VERSION and len(sl) == 1
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT fingerprint FROM entries").fetchone()[0] == "NaCl|225|Cl:1/2|Na:1/2"
    assert sl.find_duplicate(rocksalt(a=5.0)) == 1
