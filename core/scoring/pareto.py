"""Pareto fronts and iso-figure-of-merit curves on the band gap (x) vs ε_elec (y) plane.

Both objectives are maximised: a wide gap (eV) and a large electronic dielectric constant
(dimensionless). FoM = ε_elec · E_g (eV) is constant along the hyperbolas ε = FoM / E_g.
"""
from __future__ import annotations

import numpy as np


def pareto_mask(x, y) -> np.ndarray:
    """True for the points no other point dominates when maximising both ``x`` and ``y``.

    A point dominates another when it is at least as good in both objectives and strictly better in
    one. Duplicated points are on the front together. NaN points are never on the front.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(len(x), dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return mask
    # sweep by x descending (ties: y descending); a point is on the front when its y beats every
    # y seen at strictly larger x, or equals the best y of its own x group
    order = idx[np.lexsort((-y[idx], -x[idx]))]
    best_y_strictly_right = -np.inf
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        group_best = y[group[0]]
        if group_best > best_y_strictly_right:
            mask[group[y[group] == group_best]] = True
        best_y_strictly_right = max(best_y_strictly_right, group_best)
        i = j
    return mask


def pareto_points(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The front's points sorted by increasing x (so decreasing y): (x, y, original indices).

    Drawn with plotly ``line_shape="vh"`` they trace the boundary of the dominated region.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    idx = np.flatnonzero(pareto_mask(x, y))
    idx = idx[np.lexsort((-y[idx], x[idx]))]
    return x[idx], y[idx], idx


def iso_fom_curve(fom_ev: float, gap_min_ev: float, gap_max_ev: float, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(E_g in eV, ε_elec) along the hyperbola ε_elec · E_g = ``fom_ev`` for gaps in [gap_min, gap_max]."""
    if fom_ev <= 0:
        raise ValueError("the figure of merit of an iso-line must be positive (eV)")
    lo = max(float(gap_min_ev), 1e-3)
    hi = max(float(gap_max_ev), lo * 1.01)
    gap = np.linspace(lo, hi, n)
    return gap, fom_ev / gap
