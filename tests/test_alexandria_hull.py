"""``hull="alexandria"``: a small file in the Alexandria convex-hull format gives the E_hull of an entries file.

The file is made here from the Na-Fe-O entries of ``../shared/data/hulls/Na-Fe-P-O.json.gz`` (Materials
Project ComputedStructureEntry dicts, MP2020-corrected), written as the Alexandria hull is published: a
bz2 JSON object ``{"entries": [...]}`` whose entries carry ``data["elements"]``. The same entries as a plain
entries file (``references.entries_file``, Kind A) must give the same E_hull, formation energy and
coverage flags, and both must reproduce the stored DFT ``e_above_hull`` (an independent value).
"""
from __future__ import annotations

import bz2
import gzip
import json

import pytest
from pymatgen.entries.computed_entries import ComputedStructureEntry

from core import settings
from core.errors import MissingResourceError
from core.scoring import hull
from core.scoring.hull import load_hull_reference
from core.scoring.references.alexandria import AlexandriaReference
from scoring_doubles import FakeMLIP

SOURCE = settings.data_dir() / "hulls" / "Na-Fe-P-O.json.gz"
SYSTEM = {"Na", "Fe", "O"}


@pytest.fixture
def files(tmp_path, monkeypatch):
    if not SOURCE.is_file():
        pytest.skip(f"{SOURCE} not found (set CFRL_DATA_DIR)")
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    hull._REFERENCES.clear()
    with gzip.open(SOURCE, "rt") as fh:
        raw = [d for d in json.load(fh) if set(d["composition"]) <= SYSTEM]
    entries_file = tmp_path / "Na-Fe-O.json.gz"
    with gzip.open(entries_file, "wt") as fh:
        json.dump(raw, fh)
    alexandria = tmp_path / "alexandria" / "convex_hull_pbe_2023.12.29.json.bz2"
    alexandria.parent.mkdir()
    published = [{**d, "data": {**d["data"], "elements": sorted(d["composition"])}} for d in raw]
    with bz2.open(alexandria, "wt") as fh:
        json.dump({"entries": published}, fh)
    yield raw, entries_file, alexandria
    hull._REFERENCES.clear()


def test_alexandria_file_gives_the_entries_file_e_hull(files, monkeypatch):
    raw, entries_file, alexandria = files
    monkeypatch.setenv("CFRL_DATA_DIR", str(alexandria.parent.parent))
    dft = FakeMLIP({}, name="dft", label="MP DFT", mp_compatible=True)
    reference = load_hull_reference("alexandria", dft)
    assert isinstance(reference, AlexandriaReference) and reference.name == "alexandria:convex_hull_pbe_2023.12.29"
    assert reference.covered_elements() == frozenset(SYSTEM)
    plain = load_hull_reference(entries_file, dft)

    picked = raw[:: max(1, len(raw) // 25)]                        # ~25 entries: unaries, binaries, ternaries
    entries = [ComputedStructureEntry.from_dict(d) for d in picked]
    structures = [e.structure for e in entries]
    energies = [e.uncorrected_energy for e in entries]
    structures.append(entries[-1].structure)                        # the same phase 0.05 eV/atom higher
    energies.append(entries[-1].uncorrected_energy + 0.05 * len(entries[-1].structure))
    got = reference.e_above_hull_many(structures, energies)
    want = plain.e_above_hull_many(structures, energies)
    for a, b in zip(got, want):
        assert not isinstance(a, Exception) and not isinstance(b, Exception), (a, b)
        assert a.e_above_hull == pytest.approx(b.e_above_hull, abs=1e-10)
        assert a.e_form_per_atom == pytest.approx(b.e_form_per_atom, abs=1e-10)
        assert (a.elements_only, a.decomposition) == (b.elements_only, b.decomposition)
    for item, result in zip(picked, got):                          # and both are the DFT values
        assert result.e_above_hull == pytest.approx(item["e_above_hull"], abs=1e-8), item["entry_id"]
    assert got[-1].e_above_hull == pytest.approx(picked[-1]["e_above_hull"] + 0.05, abs=1e-8)
    assert sum(r.e_above_hull < 1e-8 for r in got[:-1]) == sum(d["is_stable"] for d in picked)


def test_outside_elements_and_missing_file_are_clear(files, monkeypatch, tmp_path):
    _, _, alexandria = files
    reference = AlexandriaReference(alexandria, FakeMLIP({}, name="dft", label="MP DFT", mp_compatible=True))
    from scoring_doubles import rocksalt

    result = reference.e_above_hull_many([rocksalt(4.6, ("Li", "O"))], [-10.0])[0]
    assert isinstance(result, Exception) and "covers only Fe-Na-O" in str(result)
    monkeypatch.setenv("CFRL_DATA_DIR", str(tmp_path / "empty"))
    hull._REFERENCES.clear()
    with pytest.raises(MissingResourceError, match=r"python -m core download alexandria-hull"):
        load_hull_reference("alexandria", FakeMLIP({}, name="dft", label="MP DFT", mp_compatible=True))
