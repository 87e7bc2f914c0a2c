"""Figure of merit of a dielectric: FoM = ε_elec × E_g (eV), the CrystalFormer-RL property reward.

A large electronic dielectric constant and a wide band gap conflict, so their product favours
polarisable yet robust insulators (CrystalFormer-RL, section B; its Table I ranks DFT-verified
materials by this number, e.g. FoM = 10 eV is the dashed line of its Fig. 6a).
"""
from __future__ import annotations

import math


def figure_of_merit(eps_elec: float | None, band_gap_ev: float | None) -> float:
    """ε_elec (dimensionless) × E_g (eV) -> FoM (eV).

    A band-gap model can return a slightly negative gap for a metal; the gap is clipped at 0 eV so
    the FoM of a metal is 0 rather than negative. Missing or non-finite input gives NaN.
    """
    if eps_elec is None or band_gap_ev is None:
        return math.nan
    eps, gap = float(eps_elec), float(band_gap_ev)
    if not (math.isfinite(eps) and math.isfinite(gap)):
        return math.nan
    return eps * max(gap, 0.0)
