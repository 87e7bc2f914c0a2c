"""Shortlist page edits keyed by entry id (saved, or reported as conflicts, never silently lost), and what the
page shows for a damaged database (AppTest on the real entry point)."""
from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from app import shortlisting
from app.shortlist_edits import Edits
from core.shortlist import Shortlist

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


def crystal(a: float, el: str = "Cs") -> Structure:
    return Structure(Lattice.cubic(a), [el, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def store(tmp_path):
    sl = Shortlist(tmp_path / "s.sqlite")
    for el in ("Cs", "Rb", "K"):
        sl.add(crystal(4.1, el), notes=f"{el} note", tags=["a"])
    return sl


def shown(edits: Edits, sl: Shortlist):
    listing = sl.list()
    return edits.table(shortlisting.editable_frame(listing), listing)


def test_an_edit_survives_other_sessions_adding_and_removing(store):
    edits = Edits()
    shown(edits, store)
    edits.capture({1: {"notes": "mine"}, 2: {"select": True}})   # row 1 is entry #2, row 2 entry #3
    store.remove(1)                                              # another session: rows move up
    store.add(crystal(4.1, "Na"))
    table = shown(edits, store)
    assert list(table["id"]) == [2, 3, 4] and list(table["notes"]) == ["mine", "K note", ""]
    assert list(table["select"]) == [False, True, False] and edits.count() == 1 and not edits.conflicts()
    edits.capture({1: {"tags": "x, y"}})                          # positions now follow the new table
    assert edits.save(store) == (2, []) and edits.count() == 0
    assert (store.get(2).notes, store.get(3).tags) == ("mine", ("x", "y"))


def test_a_conflicting_edit_is_reported_and_kept_until_resolved(store):
    edits = Edits()
    shown(edits, store)
    edits.capture({0: {"notes": "mine"}})
    store.update(1, notes="theirs")                              # saved in another session meanwhile
    shown(edits, store)
    assert edits.conflicts() == {1: {"notes": "theirs", "tags": "a"}}
    assert edits.save(store) == (0, []) and store.get(1).notes == "theirs"
    assert edits.pending[1]["notes"] == "mine"                   # not lost: still pending, shown again
    shown(edits, store)
    assert edits.conflicts() == {1: {"notes": "theirs", "tags": "a"}} and edits.unsaved() == []
    edits.keep_mine(1)
    assert not edits.conflicts() and edits.save(store) == (1, []) and store.get(1).notes == "mine"


def test_an_edit_is_saved_when_the_editor_reports_it(store):
    edits = Edits()
    shown(edits, store)
    key = edits.editor_key()
    edits.commit({1: {"notes": "saved at once", "tags": "b; c"}}, store)   # the editor's on_change
    assert (store.get(2).notes, store.get(2).tags) == ("saved at once", ("b; c",))
    assert edits.count() == 0 and edits.saved_ids == [2] and edits.notices == []
    edits.commit({1: {"notes": "saved at once", "tags": "b; c"}}, store)   # replayed before the rerun: no-op
    assert edits.count() == 0 and edits.saved_ids == []
    shown(edits, store)
    assert edits.editor_key() != key           # the editor starts afresh from what is stored now
    key = edits.editor_key()
    store.update(3, notes="another session")
    shown(edits, store)
    assert edits.editor_key() != key           # another session's change: the editor shows the new text
    key = edits.editor_key()
    store.remove(1)
    store.add(crystal(4.1, "Na"))              # same number of rows, other entries: positions mean others now
    shown(edits, store)
    assert edits.editor_key() != key


def test_an_edit_the_store_cannot_write_stays_pending(store, monkeypatch):
    import sqlite3

    edits = Edits()
    shown(edits, store)

    def busy(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "update", busy)
    edits.commit({0: {"notes": "typed while busy"}}, store)
    assert edits.pending[1]["notes"] == "typed while busy" and edits.unsaved() == [1]
    assert "database is locked" in edits.notices[0] and "typed while busy" not in store.get(1).notes
    monkeypatch.undo()
    edits.commit({}, store)                    # Save again
    assert store.get(1).notes == "typed while busy" and edits.count() == 0 and edits.notices == []


def test_an_edit_of_a_removed_entry_is_reported_with_its_text(store):
    edits = Edits()
    shown(edits, store)
    edits.capture({2: {"notes": "keep this text"}})
    store.remove(3)
    saved, problems = edits.save(store)                          # the page had not rerun yet
    assert saved == 0 and "keep this text" in problems[0] and edits.count() == 0
    edits.capture({0: {"notes": "x"}})
    edits.capture({0: {"notes": "Cs note"}})                     # edited back: nothing pending
    assert edits.count() == 0


def test_page_names_a_damaged_file_and_leaves_it_alone(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    data = tmp_path / "data"
    data.mkdir()
    path = data / "shortlist.sqlite"
    path.write_bytes(b"garbage, not SQLite" * 300)
    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(data))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("../pages/shortlist.py").run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert str(path) in shown and "--salvage" in shown and "untouched" in shown
    assert path.read_bytes() == b"garbage, not SQLite" * 300


def test_page_saves_edits_and_shows_conflicts_after_the_list_changed(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(tmp_path / "data"))
    sl = Shortlist()
    for el in ("Cs", "Rb"):
        sl.add(crystal(4.1, el), notes=f"{el} note")
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("../pages/shortlist.py").run()
    assert not [b for b in at.button if b.label.startswith("Save")]      # nothing to save: edits save themselves
    edits = at.session_state["shortlist-edits"]
    edits.capture({0: {"notes": "mine"}})           # typed, not yet reported to the server as saved
    sl.update(1, notes="theirs")                    # another session, first
    sl.add(crystal(4.1, "K"))
    edits.commit({1: {"notes": "also mine"}}, sl)   # the editor's on_change for the second edit
    at.run()
    assert not at.exception
    assert sl.get(2).notes == "also mine" and sl.get(1).notes == "theirs"
    assert list(at.dataframe[0].value["notes"]) == ["mine", "also mine", ""]
    assert "changed in another session" in " ".join(w.value for w in at.warning)
    next(b for b in at.button if b.label.startswith("Keep mine")).click().run()
    assert sl.get(1).notes == "mine" and at.session_state["shortlist-edits"].count() == 0
    assert "changed in another session" not in " ".join(w.value for w in at.warning)


def test_table_lays_edits_and_selection_over_whole_columns(store):
    edits = Edits()
    shown(edits, store)
    edits.capture({0: {"select": True}, 2: {"notes": "third", "tags": "t"}})
    table = shown(edits, store)
    assert list(table["select"]) == [True, False, False]
    assert list(table["notes"]) == ["Cs note", "Rb note", "third"] and list(table["tags"]) == ["a", "a", "t"]
    assert list(shortlisting.editable_frame(store.list())["notes"]) == ["Cs note", "Rb note", "K note"]   # a copy


def test_cif_zip_writes_each_entry_once_per_server(store, monkeypatch):
    import io
    import zipfile

    from core import export

    calls = []
    real = export.cif
    monkeypatch.setattr(export, "cif", lambda s, **kw: calls.append(s) or real(s, **kw))
    monkeypatch.setattr(shortlisting, "_CIFS", {})
    first = shortlisting.cif_zip_of(store, [1, 2, 3])
    assert len(calls) == 3
    again = shortlisting.cif_zip_of(store, [3, 1])
    assert len(calls) == 3                                        # from the cache
    with zipfile.ZipFile(io.BytesIO(first)) as a, zipfile.ZipFile(io.BytesIO(again)) as b:
        assert sorted(b.namelist()) == sorted(n for n in a.namelist() if n.startswith(("0001", "0003")))
        assert all(b.read(n) == a.read(n) for n in b.namelist())
        assert a.read(a.namelist()[0]).decode() == real(store.get(1).structure)
    assert shortlisting.entry_labels(store.list()) == {1: "#1 CsCl ()", 2: "#2 RbCl ()", 3: "#3 KCl ()"}


def test_trust_panel_is_built_only_when_opened(store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(store.path.parent))
    store.path.rename(store.path.parent / "shortlist.sqlite")
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("../pages/shortlist.py").run()
    assert not at.exception and not [b for b in at.button if b.label.startswith("Assess")]
    at.session_state["shortlist-trust"] = True
    at.run()
    assert [b.label for b in at.button if b.label.startswith("Assess")] == ["Assess all 3"]
