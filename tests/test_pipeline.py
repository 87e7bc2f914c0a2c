"""Scoring pipeline: one row per structure in order, errors confined to bad rows, stop and progress.

Most tests use exact test doubles (``scoring_doubles``); the last ones run the real default models.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError
from core.scoring import hull, pipeline
from core.scoring.mlip import DEFAULT_MLIP
from core.scoring.inputs import input_problem
from core.scoring.pipeline import COLUMNS, score, score_iter
from scoring_doubles import FakeMLIP, FakePropertyModel, fluorite, rocksalt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# elemental energies (eV/atom): any numbers work, these are MP's PBE values for realism
MU = {"Na": -1.31, "Cl": -1.84, "K": -1.11, "Br": -1.63, "Li": -1.91, "F": -1.91, "Mg": -1.60, "O": -4.95,
      "Cs": -0.90, "Ca": -2.01, "Lu": -4.52}


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def gap_of(s: Structure) -> float:
    return 0.5 * len(s)            # eV


def eps_of(s: Structure) -> float:
    return 2.0 + 0.1 * len(s)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    models = {"gap": FakePropertyModel(gap_of, bad="K"), "eps": FakePropertyModel(eps_of)}
    monkeypatch.setattr(pipeline, "load_property_models", lambda device=None: (models["gap"], models["eps"]))
    yield FakeMLIP(dict(MU))
    hull._STORES.clear()
    hull._REFERENCES.clear()


def bad_batch() -> tuple[list, dict[int, str]]:
    """Good structures with each kind of bad structure between them; index -> expected error keyword."""
    nan_lattice = Structure(Lattice(np.full((3, 3), np.nan)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    uncovered = fluorite(5.47, ("U", "O"))
    isolated = Structure(Lattice.cubic(12.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    huge = Structure(Lattice.cubic(1.0e4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    items = [rocksalt(), nan_lattice, overlapping, rocksalt(6.6, ("K", "Br")), uncovered, isolated, huge, None,
             rocksalt(4.03, ("Li", "F"))]
    expected = {1: "non-finite lattice", 2: "overlapping atoms", 4: "U", 5: "isolated atom", 6: "huge cell",
                7: "not a pymatgen Structure"}
    return items, expected


# ---------------------------------------------------------------- with test doubles


def test_rows_in_input_order_with_every_column(fakes):
    structures = [rocksalt(), rocksalt(5.0, ("Mg", "O")), rocksalt(4.03, ("Li", "F"))]
    df = score(structures, mlip=fakes, hull=None)
    assert tuple(df.columns) == COLUMNS and list(df.index) == [0, 1, 2]
    assert list(df["formula"]) == ["NaCl", "MgO", "LiF"]
    assert list(df["spacegroup"]) == [225, 225, 225] and list(df["nsites"]) == [8, 8, 8]
    for s, (_, row) in zip(structures, df.iterrows()):
        exact = sum(MU[el.symbol] * n for el, n in s.composition.items())
        assert row["energy_ev"] == pytest.approx(exact) and row["energy_per_atom"] == pytest.approx(exact / 8)
        assert row["band_gap_ev"] == pytest.approx(4.0) and row["eps_elec"] == pytest.approx(2.8)
        assert row["fom_ev"] == pytest.approx(4.0 * 2.8)
        assert row["struct_valid"] and row["comp_valid"] and row["unique"]
        assert row["error"] is None and not row["relaxed"]
        assert missing(row["e_above_hull"])


def test_each_bad_structure_fails_only_its_row(fakes):
    items, expected = bad_batch()
    df = score(items, mlip=fakes, hull=None, batch_size=4)
    assert len(df) == len(items)
    for i, row in df.iterrows():
        if i in expected:
            assert row["error"] and expected[i] in row["error"], (i, row["error"])
            assert missing(row["energy_ev"])
        elif items[i].composition.reduced_formula == "KBr":
            # the fake band-gap model rejects K: energy stays, the gap error is reported, no FoM
            assert "band gap" in row["error"] and np.isfinite(row["energy_ev"]) and missing(row["fom_ev"])
        else:
            assert row["error"] is None and np.isfinite(row["energy_ev"]) and np.isfinite(row["fom_ev"])
    assert df.loc[2, "struct_valid"] == False  # noqa: E712 - overlapping atoms
    assert df.loc[1, "formula"] == "NaCl"      # what can be said about a broken row is still said


def test_input_problem_messages():
    items, expected = bad_batch()
    for i, item in enumerate(items):
        problem = input_problem(item)
        if i in (1, 2, 6, 7):
            assert expected[i] in problem
        else:
            assert problem is None  # uncovered elements and isolated atoms are the model's call
    assert "too many sites" in input_problem(Structure(Lattice.cubic(60), ["Na"] * 501, np.random.default_rng(0).random((501, 3))))


def test_should_stop_returns_rows_done_and_progress_counts(fakes):
    structures = [rocksalt(5.6 + 0.01 * i) for i in range(5)]
    calls = []
    seen = []
    df = score(structures, mlip=fakes, hull=None, batch_size=2, progress=lambda d, t: calls.append((d, t)),
               should_stop=lambda: len(calls) >= 1)
    assert list(df.index) == [0, 1] and df.attrs["stopped"]
    assert calls == [(2, 5)]
    full = score(structures, mlip=fakes, hull=None, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)] and not full.attrs["stopped"]


def test_score_iter_yields_index_and_row(fakes):
    structures = [rocksalt(), rocksalt(6.6, ("K", "Br")), rocksalt(4.03, ("Li", "F"))]
    out = list(score_iter(structures, mlip=fakes, hull=None, properties=False, batch_size=2))
    assert [i for i, _ in out] == [0, 1, 2]
    assert [row["formula"] for _, row in out] == ["NaCl", "KBr", "LiF"]
    assert all(missing(row["band_gap_ev"]) and row["error"] is None for _, row in out)


def test_uniqueness_and_novelty(fakes):
    nacl = rocksalt()
    supercell = nacl.copy()
    supercell.make_supercell([2, 1, 1])
    kbr = rocksalt(6.6, ("K", "Br"))
    df = score([nacl, supercell, kbr], mlip=fakes, hull=None, properties=False, training_set=[rocksalt(6.5, ("K", "Br"))])
    assert list(df["unique"]) == [True, False, True]
    assert list(df["novel"]) == [True, True, False]


def test_relaxation_columns(fakes):
    # the real batched FIRE: FakeMLIP's flat energy surface (zero forces and stress) is a minimum at step 0
    df = score([rocksalt(), rocksalt(5.0, ("Mg", "O"))], mlip=fakes, relax=True, hull="bundled", properties=False)
    assert list(df["relaxed"]) == [True, True] and list(df["relax_steps"]) == [0, 0]
    assert all(df["relax_converged"]) and all(df["match_relaxed"])
    assert df["rmsd_relaxed"].max() == pytest.approx(0.0, abs=1e-6)
    assert set(df["hull_reference"]) == {f"{hull.BUNDLED_VERSION}-relaxed-r1/fake"}
    assert list(df["e_above_hull"]) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_bundled_hull_through_the_pipeline(fakes):
    """With linear fake energies every reference compound has zero formation energy, so the query's
    E_hull is exactly its per-atom shift; a chemical system without reference compounds is flagged."""
    structures = [rocksalt(shift=-0.02), rocksalt(5.0, ("Mg", "O"), shift=0.07), rocksalt(shift=0.2),
                  rocksalt(6.0, ("Na", "K"), shift=0.05)]
    df = score(structures, mlip=fakes, hull="bundled", properties=False)
    assert list(df["e_above_hull"]) == pytest.approx([-0.02, 0.07, 0.2, 0.05], abs=1e-9)
    assert list(df["e_form_per_atom"]) == pytest.approx([-0.02, 0.07, 0.2, 0.05], abs=1e-9)
    assert set(df["hull_reference"]) == {f"{hull.BUNDLED_VERSION}/fake"}
    assert list(df["hull_elements_only"]) == [False, False, False, True]   # matbench has no Na-K compound
    # Na-K: no compound in the reference although Na2K exists (SMACT's natride is not needed: the MP-based
    # knowledge is not asked for metal pairs) -> elements-only, E_hull a lower bound, never called stable
    assert list(df["hull_coverage"]) == ["full", "full", "full", "elements-only"]
    assert list(df["flags"]) == ["", "", "", "hull_lower_bound"]


def test_partial_coverage_is_flagged_and_missing_pair_named(fakes):
    """Cs2LiLuF6-like: the bundled hull has CsF and LiF but no Lu-F compound (LuF3 is charge neutral), so
    coverage is partial and E_hull a lower bound."""
    elpasolite = Structure.from_spacegroup("Fm-3m", Lattice.cubic(9.0), ["Cs", "Li", "Lu", "F"],
                                           [[0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0, 0, 0], [0.23, 0, 0]])
    reference = hull.load_hull_reference("bundled", fakes)
    result = reference.e_above_hull(elpasolite, fakes.energy(elpasolite) - 2.0 * len(elpasolite))
    assert result.coverage == "partial" and "F-Lu" in result.missing_pairs and result.lower_bound
    df = score([elpasolite], mlip=fakes, hull=reference, properties=False)
    assert df.loc[0, "hull_coverage"] == "partial" and "hull_lower_bound" in df.loc[0, "flags"].split(";")


def test_disordered_input_is_a_row_error_and_negative_gap_is_clipped(fakes, monkeypatch):
    """One disordered structure between valid ones fails only its row; a negative model gap is shown as 0
    with the raw value kept and the row flagged gap_clipped."""
    disordered = Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    models = (FakePropertyModel(lambda s: -0.05 if "Li" in s.composition else 4.0), FakePropertyModel(eps_of))
    monkeypatch.setattr(pipeline, "load_property_models", lambda device=None: models)
    df = score([rocksalt(), disordered, rocksalt(4.03, ("Li", "F"))], mlip=fakes, hull=None)
    assert "disordered" in df.loc[1, "error"] and "error" in df.loc[1, "flags"].split(";")
    assert df.loc[0, "error"] is None and df.loc[0, "band_gap_ev"] == pytest.approx(4.0) and df.loc[0, "flags"] == ""
    assert df.loc[2, "band_gap_ev"] == 0.0 and df.loc[2, "band_gap_raw_ev"] == pytest.approx(-0.05)
    assert df.loc[2, "fom_ev"] == 0.0 and df.loc[2, "flags"] == "gap_clipped"


# ---------------------------------------------------------------- real default models (end to end)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """One hull cache for the real-model tests of this module (references are computed once)."""
    previous = os.environ.get("CFRL_CACHE_DIR")
    os.environ["CFRL_CACHE_DIR"] = str(tmp_path_factory.mktemp("real-cache"))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    yield
    hull._STORES.clear()
    hull._REFERENCES.clear()
    if previous is None:
        os.environ.pop("CFRL_CACHE_DIR", None)
    else:
        os.environ["CFRL_CACHE_DIR"] = previous


def _properties_available() -> bool:
    try:
        pipeline.load_property_models()
    except Exception:  # noqa: BLE001 - the dielectric model may not be built yet
        return False
    return True


@pytest.mark.slow
def test_real_models_bad_batch_errors_only_in_bad_rows(real_cache):
    """The default MLIP, band gap / dielectric models and the bundled hull on a batch with every kind of
    bad structure: those rows carry the reason, the others are scored (rock-salt NaCl, KBr, LiF are all
    on Materials Project's hull, E_hull = 0, and PBE band gaps of 5.0 / 4.3 / 8.7 eV)."""
    items, expected = bad_batch()
    items[4] = fluorite(5.6, ("Po", "O"))
    expected[4] = "Po"   # polonium is outside the 89 elements of MP-trained MLIPs (M3GNet-MP-2021, SevenNet-0)
    properties = _properties_available()
    df = score(items, hull="bundled", properties=properties, batch_size=4)
    for i, row in df.iterrows():
        if i in expected:
            assert row["error"] and expected[i] in row["error"], (i, row["error"])
            assert missing(row["energy_ev"])
            continue
        assert row["error"] is None, row["error"]
        assert abs(row["e_above_hull"]) < 0.08, (row["formula"], row["e_above_hull"])
        assert row["hull_reference"] == f"{hull.BUNDLED_VERSION}/{DEFAULT_MLIP}" and not row["hull_elements_only"]
        assert -4.0 < row["e_form_per_atom"] < -1.5
        if properties:
            assert row["band_gap_ev"] > 3.0 and row["eps_elec"] > 1.0
            assert row["fom_ev"] == pytest.approx(row["band_gap_ev"] * row["eps_elec"])
    assert "isolated atom" in df.loc[5, "error"]


@pytest.mark.slow
def test_real_relaxation_recovers_rock_salt(real_cache):
    strained = rocksalt(5.95).get_primitive_structure()   # 4.6 % expanded NaCl, 2 atoms
    df = score([strained], relax=True, hull=None, properties=False)
    row = df.iloc[0]
    assert row["relaxed"] and row["relax_converged"] and row["relax_steps"] > 0
    assert row["match_relaxed"] and row["rmsd_relaxed"] < 0.05   # the same rock salt, only smaller
    static = score([strained], hull=None, properties=False).iloc[0]
    assert row["energy_per_atom"] < static["energy_per_atom"]


@pytest.mark.slow
def test_real_elemental_references_agree_with_mp_dft(real_cache):
    """M3GNet-MP-2021 was trained on MP's PBE energies, so its relaxed elemental phases of the bundled
    hull should sit near MP's own elemental references (shared/data/mp-elemental-reference-entries)."""
    import gzip
    import json

    from pymatgen.entries.computed_entries import ComputedEntry

    from core import settings
    from core.scoring.mlip import load_mlip

    with gzip.open(settings.data_dir() / "mp-elemental-reference-entries.json.gz", "rt") as fh:
        mp = {el: ComputedEntry.from_dict(d).energy_per_atom for el, d in json.load(fh).items()}
    ours = hull.mlip_elemental_potentials(frozenset({"Na", "Cl", "Li", "F"}), load_mlip("m3gnet"))
    for element, mu in ours.items():
        assert mu == pytest.approx(mp[element], abs=0.12), element


def test_relaxation_runs_chunks_through_relax_many(fakes, monkeypatch):
    """With relax=True each chunk of at most RELAX_CHUNK structures is relaxed by one relax_many call; a
    structure it returns an error for fails alone (its row carries the relax error), the others are relaxed."""
    import core.scoring.relax as relax_module

    calls = []
    real = relax_module.relax_many

    def spy(structures, mlip, **kw):
        calls.append(len(structures))
        out = real(structures, mlip, **kw)
        return [ScoringError("diverged") if abs(s.lattice.a - 5.63) < 1e-9 else r for s, r in zip(structures, out)]

    monkeypatch.setattr(relax_module, "relax_many", spy)
    items = [rocksalt(5.6 + 0.01 * i) for i in range(10)]
    df = score(items, mlip=fakes, relax=True, hull=None, properties=False, workers=1)
    assert calls == [pipeline.RELAX_CHUNK, 10 - pipeline.RELAX_CHUNK] and pipeline.RELAX_CHUNK == 8
    failed = [i for i, e in enumerate(df["error"]) if e]
    assert failed == [3] and df["error"][3] == "relax: diverged"
    assert df["relaxed"].sum() == 9 and list(df["relax_steps"].dropna()) == [0] * 9   # FakeMLIP: zero forces
