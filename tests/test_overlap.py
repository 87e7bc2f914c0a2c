"""The overlap test behind overlap-aware sampling (``core.overlap``): thresholds, orbit images, cells."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core import lattice as lat
from core.overlap import FLOOR_A, FRACTION, OverlapRule, atoms_of_row, judge, judge_row
from core.tokens import CrystalTokens


def _row(tokens: CrystalTokens) -> dict:
    return tokens.to_arrays()


def _rock_salt(a: float) -> dict:
    s = Structure.from_spacegroup(225, Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return _row(CrystalTokens.from_structure(s))


def test_rock_salt_fits_and_a_squeezed_one_does_not():
    ok = judge_row(**_rock_salt(5.64))
    assert ok.fits and ok.min_distance == pytest.approx(2.82, abs=1e-3) and ok.reason is None
    # Na-Cl threshold: 0.7 x (1.66 + 1.02) = 1.876 Å; at a = 3.6 Å they sit 1.8 Å apart
    squeezed = judge_row(**_rock_salt(3.6))
    assert not squeezed.fits and squeezed.min_distance == pytest.approx(1.8, abs=1e-3)
    assert "1.8 Å apart" in squeezed.reason and squeezed.ratio < 1


def test_thresholds_follow_the_radii_with_a_floor():
    rule = OverlapRule()
    assert rule.thresholds(np.array([6]), np.array([6]))[0] == pytest.approx(FRACTION * 1.52)
    assert rule.thresholds(np.array([1]), np.array([1]))[0] == FLOOR_A       # H-H: 0.43 Å before the floor
    with pytest.raises(ValueError):
        OverlapRule(fraction=0.0)


def test_a_general_position_on_a_special_point_overlaps_itself():
    """Drawn at (0, 0, 0), the 192 images of Fm-3m's general position coincide in fours (distance 0)."""
    row = _rock_salt(5.64)
    row["W"][0] = 12                                  # 'l', the general position, at x = y = z = 0
    frac, numbers = atoms_of_row(row["G"], row["W"], row["A"], row["XYZ"])
    assert len(frac) == 192 + 4
    v = judge_row(**{**row, "L": lat.normalize(np.array([12.0, 12, 12, 90, 90, 90]), 196)})
    assert not v.fits and v.min_distance == 0.0


def test_cells_that_cannot_be_judged_do_not_fit():
    row = _rock_salt(5.64)
    assert not judge_row(**{**row, "L": np.array([1.0, 1.0, 1.0, 3.1, 3.1, 0.01])}).fits      # no cell closes
    assert math.isnan(judge_row(**{**row, "L": np.array([400.0, 400, 400, 1.57, 1.57, 1.57])}).min_distance)
    dense = judge(np.random.default_rng(0).random((500, 3)), np.full(500, 6), np.eye(3) * 2.0, OverlapRule())
    assert not dense.fits and "must be closer" in dense.reason    # decided before any neighbour search
