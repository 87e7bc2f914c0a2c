"""Energy above hull: reproduces Materials Project's stored hull, applies MP2020 where it should,
and the bundled MLIP reference is self-consistent, lazy and cached."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from core import settings
from core.errors import InvalidInputError, MissingResourceError, ScoringError
from core.scoring import hull
from core.scoring.hull import (
    BundledReference,
    EntriesFileReference,
    MPAPIReference,
    load_hull_reference,
    mlip_entry,
    mp_run_parameters,
)
from scoring_doubles import FakeMLIP, rocksalt

HULLS = settings.data_dir() / "hulls"
NA_FE_P_O = HULLS / "Na-Fe-P-O.json.gz"
LI_CO_O = HULLS / "Li-Co-O.json.gz"   # Kind B (Alexandria), one that the README says rebuilds exactly

# MP2020 correction values (eV per atom of the element), Wang et al., Sci. Rep. 11, 15496 (2021), Table 1/2
MP2020_OXIDE = -0.687
MP2020_FE_U = -2.256
MP2020_CL = -0.614


def _raw(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    yield tmp_path / "cache"
    hull._STORES.clear()
    hull._REFERENCES.clear()


# ---------------------------------------------------------------- MP2020


def test_fe_oxide_gets_oxide_and_gga_u_corrections():
    fe2o3 = Structure.from_spacegroup("R-3c", Lattice.hexagonal(5.04, 13.75), ["Fe", "O"],
                                      [[0, 0, 0.3553], [0.3059, 0, 0.25]])
    params = mp_run_parameters(fe2o3.composition)
    assert params["run_type"] == "GGA+U" and params["hubbards"]["Fe"] == pytest.approx(5.3)
    entry = mlip_entry(fe2o3, -100.0, corrected=True)
    n_fe, n_o = fe2o3.composition["Fe"], fe2o3.composition["O"]
    assert entry.correction == pytest.approx(n_fe * MP2020_FE_U + n_o * MP2020_OXIDE, abs=1e-9)
    assert entry.energy == pytest.approx(-100.0 + entry.correction)


def test_nacl_gets_anion_but_no_u_correction():
    nacl = rocksalt()
    params = mp_run_parameters(nacl.composition)
    assert params["run_type"] == "GGA" and not params["hubbards"]
    entry = mlip_entry(nacl, -27.0, corrected=True)
    names = [adj.name for adj in entry.energy_adjustments]
    assert not any("GGA/GGA+U" in name for name in names)
    assert entry.correction == pytest.approx(nacl.composition["Cl"] * MP2020_CL, abs=1e-9)


def test_uncorrected_entry_and_bad_energy():
    assert mlip_entry(rocksalt(), -27.0, corrected=False).correction == 0.0
    with pytest.raises(ScoringError, match="non-finite"):
        mlip_entry(rocksalt(), math.nan, corrected=True)


# ---------------------------------------------------------------- Kind A: MP entries file


def test_reproduces_stored_e_above_hull_of_every_na_fe_p_o_entry():
    """Fed MP's raw DFT energies as if an MP-compatible MLIP had computed them, every entry of the
    quaternary file lands at its stored e_above_hull (0 for the stable ones)."""
    raw = _raw(NA_FE_P_O)
    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    dft = FakeMLIP({}, name="dft", label="MP DFT", mp_compatible=True)
    reference = load_hull_reference(NA_FE_P_O, dft)
    results = reference.e_above_hull_many([e.structure for e in entries], [e.uncorrected_energy for e in entries])
    for item, result in zip(raw, results):
        assert not isinstance(result, Exception), result
        assert result.e_above_hull == pytest.approx(item["e_above_hull"], abs=1e-8), item["entry_id"]
        assert result.e_form_per_atom == pytest.approx(item["e_form_per_atom"], abs=1e-8)
        assert result.reference == "file:Na-Fe-P-O.json.gz"
        if item["is_stable"]:
            assert abs(result.e_above_hull) < 1e-8
    stable = [r for r, item in zip(results, raw) if item["is_stable"]]
    assert len(stable) == 41
    # elemental entries sit in the one-element chemical systems, which hold only elements
    unary = [r for r, e in zip(results, entries) if len(e.composition.elements) == 1]
    assert unary and all(r.elements_only for r in unary)
    assert not any(r.elements_only for r, e in zip(results, entries) if len(e.composition.elements) > 1)


def test_below_hull_is_negative_and_decomposition_named():
    raw = _raw(NA_FE_P_O)
    stable = next(ComputedStructureEntry.from_dict(d) for d in raw
                  if d["is_stable"] and len(d["composition"]) == 4)
    dft = FakeMLIP({}, name="dft", mp_compatible=True)
    reference = load_hull_reference(NA_FE_P_O, dft)
    n = len(stable.structure)
    result = reference.e_above_hull(stable.structure, stable.uncorrected_energy - 0.05 * n)
    assert result.e_above_hull == pytest.approx(-0.05, abs=1e-8)
    # at its own composition the hull is the stable phase itself
    assert result.decomposition == f"1 {stable.composition.reduced_formula}"


def test_non_mp_mlip_is_compared_on_the_formation_scale(tmp_cache):
    """A non-MP-compatible MLIP is placed by formation energy relative to its own elemental phases:
    feed corrected DFT energies with elemental potentials equal to the file's elements, recover the hull."""
    raw = _raw(NA_FE_P_O)
    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    mu = {}
    for e in entries:
        if len(e.composition.elements) == 1:
            el = e.composition.elements[0].symbol
            mu[el] = min(mu.get(el, 0.0), e.energy_per_atom)
    mlip = FakeMLIP(mu, name="formation-test", mp_compatible=False)
    hull._STORES.clear()
    reference = EntriesFileReference(NA_FE_P_O, mlip)
    picks = [e for e in entries if len(e.composition.elements) == 3][:5]
    results = reference.e_above_hull_many([e.structure for e in picks], [e.energy for e in picks])
    for entry, result in zip(picks, results):
        stored = next(d for d in raw if d["entry_id"] == entry.entry_id)
        assert result.e_above_hull == pytest.approx(stored["e_above_hull"], abs=1e-6)


def test_element_outside_the_file_is_a_clear_error():
    dft = FakeMLIP({}, name="dft", mp_compatible=True)
    reference = load_hull_reference(NA_FE_P_O, dft)
    licl = rocksalt(species=("Li", "Cl"))
    [result] = reference.e_above_hull_many([licl], [-10.0])
    assert isinstance(result, ScoringError) and "Cl" in str(result) and "Li" in str(result)


# ---------------------------------------------------------------- Kind B: Alexandria formation energies


def test_kind_b_file_reproduces_stored_hull(tmp_cache):
    raw = _raw(LI_CO_O)
    mu = {"Li": -1.9, "Co": -7.1, "O": -4.9}
    mlip = FakeMLIP(mu, name="kindb", mp_compatible=False)
    reference = EntriesFileReference(LI_CO_O, mlip)
    assert reference.file.kind == "formation"
    picks = [d for d in raw if d["is_stable"]][:3] + [d for d in raw if not d["is_stable"]][:3]
    structures, energies = [], []
    for d in picks:
        species = [el for el, n in d["composition"].items() for _ in range(int(n))]
        side = 2.2 * len(species) ** (1 / 3)
        coords = [[(i * 0.618) % 1, (i * 0.382) % 1, (i * 0.5 + 0.1) % 1] for i in range(len(species))]
        s = Structure(Lattice.cubic(side), species, coords)
        structures.append(s)
        energies.append(sum(mu[el] for el in species) + d["e_form_per_atom"] * len(species))
    for d, result in zip(picks, reference.e_above_hull_many(structures, energies)):
        assert result.e_above_hull == pytest.approx(d["e_above_hull"], abs=1e-6)


def test_garbage_and_missing_entries_files(tmp_path):
    with pytest.raises(MissingResourceError, match="neither"):
        load_hull_reference(tmp_path / "nope.json.gz", FakeMLIP({}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not json")
    with pytest.raises(InvalidInputError, match="not a JSON"):
        load_hull_reference(garbage, FakeMLIP({}))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"a": 1}]))
    with pytest.raises(InvalidInputError, match="expected pymatgen"):
        load_hull_reference(wrong, FakeMLIP({}))


# ---------------------------------------------------------------- mp-api


def test_mp_api_without_key_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(MissingResourceError, match="MP_API_KEY"):
        MPAPIReference(FakeMLIP({}))


def test_mp_api_entries_are_used_like_an_entries_file(monkeypatch, tmp_cache):
    from core.scoring.references import mp_api

    raw = _raw(NA_FE_P_O)
    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    fetched = []

    def fake_entries(self, elements):
        fetched.append(frozenset(elements))
        return [e for e in entries if {el.symbol for el in e.composition.elements} <= elements]

    monkeypatch.setenv("MP_API_KEY", "test-key")
    monkeypatch.setattr(mp_api.MPEntriesClient, "entries", fake_entries)
    reference = load_hull_reference("mp-api", FakeMLIP({}, name="dft", mp_compatible=True))
    picks = [e for e in entries if e.composition.reduced_formula in ("NaFePO4", "Fe2O3")][:3]
    for entry, result in zip(picks, reference.e_above_hull_many([e.structure for e in picks], [e.uncorrected_energy for e in picks])):
        stored = next(d for d in raw if d["entry_id"] == entry.entry_id)
        assert result.e_above_hull == pytest.approx(stored["e_above_hull"], abs=1e-8)
        assert result.reference == "mp-api"
    assert all(f <= {"Na", "Fe", "P", "O"} for f in fetched)


def test_shipped_reference_energies_are_used_and_user_cache_wins(tmp_path, monkeypatch):
    """Reference energies shipped in checkpoints/hull-references/ are read instead of recomputed; a value
    already in the user's cache takes precedence, and rows in neither are computed with the MLIP."""
    from core.scoring.references import store

    mlip = FakeMLIP({"Na": -1.0, "Cl": -2.0})
    monkeypatch.setenv("CFRL_CHECKPOINTS_DIR", str(tmp_path / "ck"))
    section = f"compounds-{store.COMPOUND_RECIPE}"
    shipped = store.shipped_path(mlip)
    shipped.parent.mkdir(parents=True)
    shipped.write_text(json.dumps({"mlip": {"label": mlip.label},
                                   section: {"0": {"energy_ev": -10.0}, "1": {"energy_ev": -20.0}},
                                   "compounds-v0": {"2": {"energy_ev": 99.0}}}))   # another recipe: ignored
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{store.mlip_key(mlip)}.json").write_text(json.dumps({section: {"1": {"energy_ev": -21.0}}}))
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    energies = store.ReferenceEnergies(mlip, cache_root=cache).compound_energies(["0", "1", "2"], lambda row: nacl)
    assert energies == {"0": -10.0, "1": -21.0, "2": pytest.approx(4 * -1.0 + 4 * -2.0)}   # conventional NaCl: 8 atoms
    assert mlip.calls == [["NaCl"]]          # only row "2" was computed


def test_bundled_matbench_file_is_found_without_importing_crystal_toolkit_and_missing_package_is_named(monkeypatch):
    import subprocess
    import sys

    code = ("import sys; from core.scoring.references.matbench import matbench_dielectric_path as p; "
            "print(p().name, 'crystal_toolkit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent)).stdout.split()
    assert out == ["matbench_dielectric.json.gz", "False"]      # importing crystal_toolkit costs ~8 s (Dash)

    import importlib.util

    from core.errors import MissingResourceError
    from core.scoring.references import matbench

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingResourceError, match="pip install crystal-toolkit"):
        matbench.matbench_dielectric_path()


def test_sulfur_shortcut_gives_the_correction_pymatgen_computes_itself():
    """Sulphides without an element more electronegative than S skip pymatgen's symmetry analysis; the MP2020
    correction must equal the one MP2020 computes from the structure itself, for sulphides and sulfates alike."""
    from pymatgen.core import Composition

    from core.scoring.references.matbench import load_matbench_dielectric

    table = load_matbench_dielectric()
    formulas = table.column("formula")
    rows = [row for row in table.rows if "S" in Composition(str(formulas[row])).as_dict()][::4]
    kinds = {"shortcut": 0, "sulfate": 0}
    for row in rows:
        structure = table.structure(str(row))
        if structure.composition.is_element:
            continue
        ours = mlip_entry(structure, -5.0 * len(structure), corrected=True)
        theirs = ComputedStructureEntry(structure, -5.0 * len(structure),
                                        parameters=mp_run_parameters(structure.composition),
                                        data={"oxidation_states": ours.data["oxidation_states"],
                                              **({"oxide_type": ours.data["oxide_type"]} if "oxide_type" in ours.data else {})})
        hull.mp2020().process_entry(theirs, on_error="raise")
        assert ours.correction == pytest.approx(theirs.correction, abs=1e-9), structure.formula
        kind = hull.sulfur_anion_type(structure.composition, structure)
        electronegative = any(el.X > hull.Element("S").X for el in structure.composition.elements)
        kinds["shortcut"] += not electronegative
        kinds["sulfate"] += kind == "sulfate"
    assert kinds["shortcut"] > 50 and kinds["sulfate"] > 10, kinds


def test_shipped_relaxed_references_cover_every_compound_and_never_rise_above_static():
    """The relaxed M3GNet section shipped in checkpoints/hull-references/ holds every bundled compound the static
    section holds, with the same rows failing, and relaxing from the MP geometry never raised an energy
    (FIRE stops at the first point below fmax: the relaxed total energy is at most the static one)."""
    from core import settings
    from core.scoring.references import store

    path = settings.checkpoints_dir() / "hull-references" / "m3gnet__M3GNet-MP-2021.2.8-PES.json"
    data = json.loads(path.read_text())
    static = data[f"compounds-{store.COMPOUND_RECIPE}"]
    relaxed = data[f"compounds-relaxed-{store.RELAXED_RECIPE}"]
    assert set(relaxed) == set(static) and len(static) > 6000
    assert {k for k, v in relaxed.items() if "error" in v} == {k for k, v in static.items() if "error" in v}
    rises = {k: relaxed[k]["energy_ev"] - v["energy_ev"] for k, v in static.items()
             if "energy_ev" in v and relaxed[k]["energy_ev"] > v["energy_ev"] + 1e-4}
    assert not rises, rises
    assert sum(v.get("converged", False) for v in relaxed.values()) > 0.99 * len(relaxed)
