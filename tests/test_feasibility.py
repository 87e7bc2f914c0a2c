"""Feasibility checklist: every flag on a hand-made case (passes, fails, unknown)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from core.scoring.feasibility import (
    CHECKS,
    as_columns,
    badge,
    check_charge,
    check_elements,
    check_novel,
    check_relaxation,
    check_stable,
    check_symmetry,
    feasibility,
    feasibility_frame,
)
from core.scoring.metrics import NoveltyChecker
from core.symmetry import space_group_number
from scoring_doubles import fluorite, rocksalt


def test_charge_balance_by_smact():
    assert check_charge(rocksalt()).passed is True                         # Na+ Cl-
    assert check_charge(fluorite(5.46, ("Ca", "F"))).passed is True        # Ca2+ 2F-
    wrong = check_charge(fluorite(6.0, ("Na", "Cl")))                       # NaCl2: no neutral assignment
    assert wrong.passed is False and "NaCl2" in wrong.reason


def test_stability_threshold_and_committee_mean():
    assert check_stable({"e_above_hull": 0.05}).passed is True
    assert check_stable({"e_above_hull": 0.25}).passed is False
    assert check_stable({"e_above_hull": 0.25}, ehull_max=0.3).passed is True
    assert check_stable({}).passed is None
    assert check_stable({"e_above_hull": math.nan}).passed is None
    # the committee mean decides when present, and the reason shows the spread
    committee = check_stable({"e_above_hull": 0.05, "e_above_hull_mean": 0.15, "e_above_hull_std": 0.04})
    assert committee.passed is False and "± 0.040" in committee.reason


def test_relaxation_from_columns():
    ok = {"relaxed": True, "relax_converged": True, "match_relaxed": True, "rmsd_relaxed": 0.02}
    assert check_relaxation(ok).passed is True
    assert check_relaxation({**ok, "relax_converged": False, "relax_steps": 500}).passed is False
    assert check_relaxation({**ok, "match_relaxed": False, "rmsd_relaxed": None}).passed is False
    moved = check_relaxation({**ok, "rmsd_relaxed": 0.3})
    assert moved.passed is False and "0.300" in moved.reason
    assert check_relaxation({"relaxed": False}).passed is None


def test_relaxation_and_symmetry_from_structures():
    generated = rocksalt()
    same = rocksalt(5.75)                       # uniform 1 % expansion: matches, same space group
    distorted = generated.copy()
    distorted.translate_sites([0], [0.06, 0.03, 0.0])   # off-centre Na: symmetry drops below Fm-3m
    assert space_group_number(generated) == 225
    assert check_relaxation({}, generated, same).passed is True
    assert check_symmetry(generated, same).passed is True
    broken = check_symmetry(generated, distorted)
    assert broken.passed is False and broken.reason.startswith("space group 225 → ")
    transformed = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # rock salt -> CsCl type
    assert check_relaxation({}, generated, transformed).passed is False
    # without a relaxed structure: intended vs found space group of a generated row, else unknown
    assert check_symmetry(None, None, {"spacegroup": 225, "spacegroup_found": 221}).passed is False
    assert check_symmetry(None, None, {"spacegroup": 225}).passed is None


def test_novelty_against_a_training_set():
    checker = NoveltyChecker([rocksalt()])
    assert check_novel(rocksalt(5.8), {}, checker).passed is False
    assert check_novel(rocksalt(4.03, ("Li", "F")), {}, checker).passed is True
    assert check_novel(rocksalt(), {"novel": True}).passed is True
    assert check_novel(rocksalt(), {}).passed is None


@pytest.mark.parametrize("species, safe, abundant", [
    (("Na", "Cl"), True, True),
    (("Cd", "O"), False, True),          # highly toxic
    (("Pb", "S"), False, True),
    (("Po", "O"), False, True),          # radioactive
    (("Pt", "O"), True, False),          # scarce and costly
    (("Hg", "Te"), False, False),
])
def test_element_flags(species, safe, abundant):
    safe_check, abundant_check = check_elements(rocksalt(5.0, species))
    assert safe_check.passed is safe and abundant_check.passed is abundant


def test_critical_raw_materials_are_named_but_do_not_fail():
    _, check = check_elements(rocksalt(4.2, ("Mg", "O")))
    assert check.passed is True and "EU critical raw materials: Mg" in check.reason


def test_checklist_columns_and_frame():
    row = {"e_above_hull": 0.3, "relaxed": False, "novel": True}
    checks = feasibility(rocksalt(5.0, ("Cd", "O")), row)
    assert [c.name for c in checks] == list(CHECKS)
    columns = as_columns(checks)
    assert columns["feasible_stable"] is False and columns["feasible_safe_elements"] is False
    assert columns["feasible_relaxation_ok"] is None and columns["feasible_novel"] is True
    assert columns["feasibility_failed"] == 2
    assert "stable: E_hull 0.300" in columns["feasibility_notes"] and "Cd" in columns["feasibility_notes"]
    assert badge(checks[0]).startswith("✅") and badge(checks[1]).startswith("❌") and badge(checks[2]).startswith("❔")
    frame = feasibility_frame([rocksalt(), None], pd.DataFrame({"e_above_hull": [0.0, 1.0]}, index=[7, 8]))
    assert list(frame.index) == [7, 8]
    assert frame.loc[7, "feasible_stable"] is True or frame.loc[7, "feasible_stable"] == True  # noqa: E712
    assert frame.loc[8, "feasibility_notes"] == "no structure"
