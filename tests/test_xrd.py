"""XRD: peak positions from Bragg's law, fcc extinctions, known strongest reflections, sources, broadening."""
from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core.errors import InvalidInputError
from core.xrd import SOURCES, broadened, xrd_pattern

FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
A_NACL = 5.64   # Å
CU_KA = 1.54184  # Å, Kα1/Kα2 weighted mean


def nacl() -> Structure:
    return Structure(Lattice.cubic(A_NACL), ["Na"] * 4 + ["Cl"] * 4,
                     FCC + [[(x + 0.5) % 1, y, z] for x, y, z in FCC])


def bragg_two_theta(d: float, wavelength: float = CU_KA) -> float:
    """2θ (degrees) of a reflection with spacing d (Å): λ = 2 d sin θ."""
    return float(np.degrees(2 * np.arcsin(wavelength / (2 * d))))


def test_nacl_200_is_the_strongest_peak_at_31_7_degrees():
    df = xrd_pattern(nacl())
    top = df.loc[df["intensity"].idxmax()]
    assert top["hkl"] == "(2 0 0)" and top["intensity"] == pytest.approx(100.0)
    assert top["two_theta"] == pytest.approx(bragg_two_theta(A_NACL / 2), abs=0.01)
    assert top["two_theta"] == pytest.approx(31.7, abs=0.05)          # the textbook rock-salt (200) line
    assert top["d_spacing"] == pytest.approx(2.82, abs=1e-3) and top["multiplicity"] == 6
    assert list(df.columns) == ["two_theta", "intensity", "hkl", "d_spacing", "multiplicity"]


def test_nacl_shows_only_fcc_allowed_reflections():
    df = xrd_pattern(nacl())
    # Face-centred cubic: h, k, l all even or all odd. Below 60°: (111), (200), (220), (311), (222).
    expected = {"(1 1 1)": 3, "(2 0 0)": 4, "(2 2 0)": 8, "(3 1 1)": 11, "(2 2 2)": 12}
    low = df[df["two_theta"] < 60]
    assert list(low["hkl"]) == list(expected)
    for hkl, h2k2l2 in expected.items():
        row = low[low["hkl"] == hkl].iloc[0]
        assert row["two_theta"] == pytest.approx(bragg_two_theta(A_NACL / np.sqrt(h2k2l2)), abs=0.01)
    # the (111) of rock salt is weak: Na+ and Cl- scatter out of phase there (f_Cl - f_Na)
    assert low.iloc[0]["intensity"] < 20


def test_molybdenum_source_follows_braggs_law():
    cu, mo = xrd_pattern(nacl()), xrd_pattern(nacl(), wavelength="MoKa")
    d = cu.iloc[0]["d_spacing"]
    first_mo = mo[np.isclose(mo["d_spacing"], d)].iloc[0]
    assert first_mo["two_theta"] == pytest.approx(bragg_two_theta(d, SOURCES["MoKa"]), abs=0.01)
    assert len(mo) > len(cu)       # shorter wavelength reaches more reflections below 90°
    numeric = xrd_pattern(nacl(), wavelength=1.0)
    assert numeric.iloc[0]["two_theta"] == pytest.approx(bragg_two_theta(d, 1.0), abs=0.01)


def test_hexagonal_reflections_use_four_indices():
    mg = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    df = xrd_pattern(mg)
    assert all(len(h.strip("()").split(",")[0].split()) == 4 for h in df["hkl"])
    # hcp Mg: (10-11) is the strongest line, near 36.6° with Cu Kα
    top = df.loc[df["intensity"].idxmax()]
    assert top["two_theta"] == pytest.approx(36.6, abs=0.3)


def test_bad_requests_are_clear():
    for kwargs in [dict(wavelength="FooKa"), dict(wavelength=-1.0), dict(two_theta_range=(90, 10))]:
        with pytest.raises(InvalidInputError):
            xrd_pattern(nacl(), **kwargs)
    with pytest.raises(InvalidInputError):
        xrd_pattern("NaCl")


def test_broadened_curve_peaks_where_the_lines_are():
    peaks = xrd_pattern(nacl())
    curve = broadened(peaks, fwhm=0.2, step=0.01, two_theta_range=(20, 60))
    top = curve.loc[curve["intensity"].idxmax()]
    assert top["two_theta"] == pytest.approx(peaks.loc[peaks["intensity"].idxmax(), "two_theta"], abs=0.01)
    assert top["intensity"] == pytest.approx(100, rel=0.01)
    # half maximum 0.1° from the centre (FWHM 0.2°)
    half = curve[np.isclose(curve["two_theta"], top["two_theta"] + 0.1, atol=1e-6)]["intensity"].iloc[0]
    assert half == pytest.approx(50, rel=0.02)
