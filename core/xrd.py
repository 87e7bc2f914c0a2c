"""Powder X-ray diffraction patterns of a structure (pymatgen's XRDCalculator, kinematic theory).

``xrd_pattern`` gives the peak list: 2θ (degrees), intensity (strongest = 100), Miller indices of the
reflection families (Miller–Bravais hkil for hexagonal cells), d-spacing (Å) and multiplicity. ``broadened``
turns the peaks into a continuous curve (Gaussian peaks of a given FWHM) for plotting, as an instrument
would record it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pymatgen.analysis.diffraction.xrd import WAVELENGTHS, XRDCalculator
from pymatgen.core import Structure

from core.errors import InvalidInputError

#: Named X-ray sources (Å), from pymatgen; "CuKa" is the Kα1/Kα2 weighted mean, 1.54184 Å.
SOURCES: dict[str, float] = dict(WAVELENGTHS)
COLUMNS = ("two_theta", "intensity", "hkl", "d_spacing", "multiplicity")


def _hkl_text(families: list[dict]) -> str:
    return ", ".join("(" + " ".join(str(int(i)) for i in fam["hkl"]) + ")" for fam in families)


def xrd_pattern(structure: Structure, wavelength: str | float = "CuKa",
                two_theta_range: tuple[float, float] = (0.0, 90.0), scaled: bool = True) -> pd.DataFrame:
    """Powder XRD peaks of ``structure``.

    Args:
        structure: the crystal (symmetry is not needed; all reflections are summed).
        wavelength: a source name from ``SOURCES`` ("CuKa", "MoKa", ...) or a wavelength in Å.
        two_theta_range: 2θ window in degrees.
        scaled: intensities scaled so the strongest peak is 100 (else arbitrary units).

    Returns:
        DataFrame with columns two_theta (degrees), intensity, hkl (e.g. "(2 0 0)"; several families
        at one angle are comma separated), d_spacing (Å), multiplicity (sum over the families), sorted by 2θ.
    """
    if not isinstance(structure, Structure) or len(structure) == 0:
        raise InvalidInputError("an XRD pattern needs a pymatgen Structure with at least one site")
    if isinstance(wavelength, str) and wavelength not in SOURCES:
        raise InvalidInputError(f"unknown X-ray source {wavelength!r}; use one of {', '.join(SOURCES)} "
                                "or a wavelength in Å")
    if not isinstance(wavelength, str) and not (np.isfinite(wavelength) and 0 < wavelength < 10):
        raise InvalidInputError(f"wavelength {wavelength!r} Å is not a usable X-ray wavelength (0–10 Å)")
    lo, hi = two_theta_range
    if not 0 <= lo < hi <= 180:
        raise InvalidInputError(f"2θ range {two_theta_range} must lie within 0–180 degrees, low < high")
    try:
        pattern = XRDCalculator(wavelength=wavelength).get_pattern(structure, scaled=scaled,
                                                                   two_theta_range=(lo, hi))
    except Exception as exc:  # e.g. an element without tabulated atomic scattering factors
        raise InvalidInputError(f"cannot compute the XRD pattern of {structure.composition.reduced_formula}: "
                                f"{exc}") from exc
    return pd.DataFrame({
        "two_theta": np.asarray(pattern.x, dtype=float),
        "intensity": np.asarray(pattern.y, dtype=float),
        "hkl": [_hkl_text(fams) for fams in pattern.hkls],
        "d_spacing": np.asarray(pattern.d_hkls, dtype=float),
        "multiplicity": [int(sum(f["multiplicity"] for f in fams)) for fams in pattern.hkls],
    }, columns=list(COLUMNS))


def broadened(peaks: pd.DataFrame, fwhm: float = 0.15, step: float = 0.02,
              two_theta_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """A continuous pattern: each peak a Gaussian of full width at half maximum ``fwhm`` (degrees 2θ),
    sampled every ``step`` degrees; the peak heights equal the peak intensities where peaks do not overlap.

    Returns a DataFrame with columns two_theta (degrees) and intensity.
    """
    if fwhm <= 0 or step <= 0:
        raise InvalidInputError("fwhm and step must be positive (degrees)")
    if two_theta_range is None:
        two_theta_range = (0.0, 90.0) if peaks.empty else (max(0.0, peaks["two_theta"].min() - 5),
                                                           min(180.0, peaks["two_theta"].max() + 5))
    grid = np.arange(two_theta_range[0], two_theta_range[1] + step / 2, step)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    centers = peaks["two_theta"].to_numpy()[:, None]
    heights = peaks["intensity"].to_numpy()[:, None]
    curve = (heights * np.exp(-0.5 * ((grid[None, :] - centers) / sigma) ** 2)).sum(axis=0)
    return pd.DataFrame({"two_theta": grid, "intensity": curve})
