"""Hull completion on demand: the missing Cs-F and Lu-F binaries of an elpasolite's system are proposed by
prototype substitution (LuF3 from ScF3/YF3, the textbook trifluoride; CsF from the alkali halides), relaxed, cached per MLIP and pair, reported, and
the row becomes "completed" instead of a lower bound."""
from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from core.scoring import completion, hull
from core.scoring.pipeline import score
from scoring_doubles import FakeMLIP

MU = {"Cs": -0.90, "Li": -1.91, "Lu": -4.52, "F": -1.91, "Sc": -6.3, "Y": -6.4}


def elpasolite() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(9.0), ["Cs", "Li", "Lu", "F"],
                                     [[0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0, 0, 0], [0.23, 0, 0]])


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    yield FakeMLIP(dict(MU))
    hull._STORES.clear()
    hull._REFERENCES.clear()


def test_candidates_are_charge_neutral_substitutions_ranked_by_similarity():
    found = completion.candidates("Lu", "F", limit=6)
    assert {c.structure.composition.reduced_formula for c in found} == {"LuF3"}   # Lu3+ with F-: only LuF3
    assert found[0].template_formula in ("ScF3", "YF3")                          # the closest trivalent fluorides
    assert [c.distance for c in found] == sorted(c.distance for c in found)


def test_completion_fills_the_missing_pair_caches_it_and_reports(fake):
    lines = []
    reference = hull.CompletedBundledReference(fake, max_relaxations=4, progress=lines.append)
    crystal = elpasolite()
    result = reference.e_above_hull(crystal, fake.energy(crystal))
    assert result.coverage == "completed" and not result.lower_bound
    report = reference.reports["Cs-F-Li-Lu"]
    # the bundled set holds LiF and the ternary CsLiF2 but no Cs-F or Lu-F binary: both are completed,
    # within the system's budget (2 relaxations per pair)
    assert report.missing_pairs == ("Cs-F", "F-Lu") and 0 < len(report.added) <= 4 and report.relaxations <= 4
    assert {a["formula"] for a in report.added} == {"CsF", "LuF3"} and any("LuF3" in line for line in lines)
    assert completion.cache_path(fake, "F-Lu").is_file() and completion.cache_path(fake, "Cs-F").is_file()
    again = hull.CompletedBundledReference(fake, max_relaxations=4)
    again.e_above_hull(crystal, fake.energy(crystal))
    assert again.reports["Cs-F-Li-Lu"].relaxations == 0                           # served from the cache
    df = score([crystal], mlip=fake, hull="bundled+complete", properties=False)
    assert df.loc[0, "hull_coverage"] == "completed" and "hull_lower_bound" not in df.loc[0, "flags"]
    assert df.loc[0, "hull_reference"].startswith("bundled+complete-")
