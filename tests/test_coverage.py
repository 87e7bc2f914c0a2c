"""Hull coverage classes and the sanity rules built on them.

Independent expectations: textbook chemistry (LuF3, CsF, LiF exist; Ti-Zr forms a solid solution,
no compound; Mg2Si exists) and the Materials Project hull of Li-Co-Ni-O (``shared/data/hulls``), which
holds every MP phase of the system and so must count as fully covered.
"""
from __future__ import annotations

import gzip
import json

import pytest

from core import settings
from core.scoring import sanity
from core.scoring.coverage import classify, expected_pairs, pair_name


def names(pairs):
    return sorted(pair_name(p) for p in pairs)


def test_expected_pairs_follow_chemistry():
    assert names(expected_pairs({"Cs", "Li", "Lu", "F"})) == ["Cs-F", "F-Li", "F-Lu"]   # no Cs-Li, Li-Lu compounds
    assert names(expected_pairs({"Ti", "Zr"})) == []   # solid solution, no compound: SMACT is not asked for metal pairs
    assert names(expected_pairs({"Mg", "Si"})) == ["Mg-Si"]


def test_classes():
    system = {"Cs", "Li", "Lu", "F"}
    assert classify({"Cu"}, []).kind == "full"
    assert classify(system, []).kind == "elements-only"
    partial = classify(system, [{"Cs", "F"}, {"Li", "F"}])
    assert partial.kind == "partial" and partial.missing_pairs == ("F-Lu",)
    # a higher compound holding Lu and F (here the elpasolite itself) does not stand in for LuF3
    with_elpasolite = classify(system, [{"Cs", "F"}, {"Li", "F"}, {"Cs", "Li", "Lu", "F"}])
    assert with_elpasolite.kind == "partial" and with_elpasolite.missing_pairs == ("F-Lu",)
    assert classify(system, [{"Cs", "F"}, {"Li", "F"}, {"Lu", "F"}, {"Cs", "Li", "Lu", "F"}]).kind == "full"


def test_materials_project_hull_of_its_own_system_is_full():
    path = settings.data_dir() / "hulls" / "Li-Co-Ni-O.json.gz"
    items = json.load(gzip.open(path, "rt"))
    sets = [{site["species"][0]["element"] for site in d["structure"]["sites"]} for d in items]
    assert classify({"Li", "Co", "Ni", "O"}, sets).kind == "full"
    without_nickel_oxides = [s for s in sets if not {"Ni", "O"} <= s]
    assert classify({"Li", "Co", "Ni", "O"}, without_nickel_oxides).missing_pairs == ("Ni-O",)


@pytest.mark.parametrize("row, flags, stable", [
    ({"e_above_hull": 0.02, "hull_coverage": "full"}, [], True),
    ({"e_above_hull": 0.02, "hull_coverage": "completed"}, [], True),
    ({"e_above_hull": -2.1, "hull_coverage": "partial"}, ["below_hull", "hull_lower_bound"], False),
    ({"e_above_hull": 0.02, "hull_coverage": "elements-only"}, ["hull_lower_bound"], False),
    ({"e_above_hull": 0.02, "hull_coverage": "full", "comp_valid": False}, ["invalid"], False),  # Cs2MgF6-like
    ({"e_above_hull": 46.0, "hull_coverage": "full"}, ["unphysical"], False),
    ({"e_above_hull": 0.5, "hull_coverage": "full", "band_gap_raw_ev": -0.1}, ["gap_clipped"], False),
])
def test_flags_and_stable_badge(row, flags, stable):
    assert sanity.row_flags(row) == flags
    assert sanity.may_call_stable(row) is stable
