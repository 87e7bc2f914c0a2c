"""Overlapping atoms in a token row: the geometric test behind overlap-aware sampling.

A crystal *overlaps* when two atoms (periodic images included, an atom's own images too, and two
members of one Wyckoff orbit that land on the same point) are closer than the pair's threshold

    threshold(i, j) = max(FLOOR_A, FRACTION × (r_i + r_j))         [Å]

with r the covalent radii of Cordero et al. (2008) as ``ase.data.covalent_radii`` ships them.

Why these numbers (``bench/overlap.py training`` measures them on checkpoints/base/training_set.npz,
the 5,177 crystals the base model learned from): per crystal, the smallest ratio d / (r_i + r_j) over
all pairs has a median of 0.93, a 1st percentile of 0.76 and a minimum of 0.64 (a Li–O pair at
1.25 Å); 7 crystals (0.14 %) lie below 0.70, none below 0.60. FRACTION = 0.7 keeps 99.9 % of the
training crystals and rejects what no real crystal shows, e.g. O–O closer than 0.92 Å or C–C closer
than 1.06 Å. The shortest distance of any training crystal is 0.75 Å (a bond to hydrogen; 3.4 % of
the crystals have one below 1 Å, all to H), so FLOOR_A = 0.7 Å: it binds only for pairs with
hydrogen, whose radii sum (H–H 0.62 Å) times 0.7 would let two atoms sit 0.43 Å apart.

Cells that cannot be judged count as overlapping, so the sampler draws again: impossible lattice
parameters, a lattice vector over ``core.neighbors.MAX_EDGE_A`` (the neighbour search spans the cell),
or a density at which N spheres of the smallest threshold cannot fit at all (volume per atom below
that of the densest sphere packing, d³/√2), which would otherwise ask the search for millions of pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.data import covalent_radii

from core import lattice as lat
from core import wyckoff
from core.neighbors import MAX_EDGE_A

FRACTION = 0.7     # of the sum of covalent radii
FLOOR_A = 0.7      # Å
REPORT_RADIUS_A = 3.0   # Å; distances are searched at least this far, so ``min_distance`` is exact below it


@dataclass(frozen=True)
class OverlapRule:
    """Pair thresholds: ``max(floor, fraction × (r_i + r_j))`` Å; see the module docstring for the numbers.

    Attributes:
        fraction: share of the sum of the two covalent radii (> 0).
        floor: smallest threshold for any pair, Å (≥ 0).
    """

    fraction: float = FRACTION
    floor: float = FLOOR_A

    def __post_init__(self) -> None:
        if not (self.fraction > 0 and math.isfinite(self.fraction)) or not (self.floor >= 0 and math.isfinite(self.floor)):
            raise ValueError(f"overlap rule needs fraction > 0 and floor >= 0, got {self.fraction}, {self.floor}")

    def thresholds(self, numbers_i: np.ndarray, numbers_j: np.ndarray) -> np.ndarray:
        """Threshold (Å) of each pair of atomic numbers (element-wise)."""
        r = np.asarray(covalent_radii)
        return np.maximum(self.floor, self.fraction * (r[numbers_i] + r[numbers_j]))


@dataclass(frozen=True)
class Verdict:
    """The test of one crystal: ``fits`` when no pair is closer than its threshold.

    Attributes:
        fits: no overlap, and the cell could be judged.
        min_distance: shortest interatomic distance, Å (inf when none lies within the search radius;
            for a cell too dense to search, an upper bound from the sphere-packing argument; nan when
            the lattice cannot be built).
        ratio: smallest distance / threshold over the pairs found (≥ 1 when it fits; inf when no pair
            lies within the search radius; -inf when the cell cannot be judged): how close it came.
        reason: why it does not fit (None when it does).
    """

    fits: bool
    min_distance: float
    ratio: float = -math.inf
    reason: str | None = None


def atoms_of_row(G: int, W: np.ndarray, A: np.ndarray, XYZ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every atom of a token row: (fractional coordinates (N, 3), atomic numbers (N,)).

    Orbit members are *not* merged (unlike ``CrystalTokens.to_structure``): a site drawn so close to a
    special position that two of its images coincide is an overlap at distance 0, not a smaller cell.
    """
    frac, numbers = [], []
    for w, a, xyz in zip(np.asarray(W), np.asarray(A), np.asarray(XYZ)):
        if w <= 0:
            break
        points = wyckoff.orbit(int(G), int(w), np.asarray(xyz, np.float64))
        frac.append(points)
        numbers.append(np.full(len(points), int(a)))
    if not frac:
        return np.zeros((0, 3)), np.zeros(0, int)
    return np.concatenate(frac), np.concatenate(numbers)


def lattice_matrix(L_normalised: np.ndarray, num_atoms: int) -> np.ndarray | None:
    """3×3 cell (rows a, b, c in Å) from a normalised lattice token row; None when no cell closes."""
    a, b, c, alpha, beta, gamma = lat.denormalize(np.asarray(L_normalised, np.float64), num_atoms)
    if not all(math.isfinite(v) for v in (a, b, c, alpha, beta, gamma)) or min(a, b, c) <= 0:
        return None
    if not all(0 < x < 180 for x in (alpha, beta, gamma)):
        return None
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    sg = math.sin(math.radians(gamma))
    if sg < 1e-8:
        return None
    cz2 = 1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg     # (V / abc)²
    if not cz2 > 1e-12:
        return None
    # the standard setting with a along x and b in the xy plane; distances do not depend on the orientation
    return np.array([[a, 0.0, 0.0],
                     [b * cg, b * sg, 0.0],
                     [c * cb, c * (ca - cb * cg) / sg, c * math.sqrt(cz2) / sg]])


def judge(frac: np.ndarray, numbers: np.ndarray, matrix: np.ndarray | None, rule: OverlapRule) -> Verdict:
    """Whether the atoms ``frac`` / ``numbers`` fit in the cell ``matrix`` (Å) under ``rule``."""
    if matrix is None:
        return Verdict(False, math.nan, reason="the lattice parameters do not form a cell")
    n = len(numbers)
    if n == 0:
        return Verdict(False, math.nan, reason="no atoms")
    longest = float(np.linalg.norm(matrix, axis=1).max())
    if longest > MAX_EDGE_A:
        return Verdict(False, math.nan, reason=f"a lattice vector of {longest:.4g} Å (> {MAX_EDGE_A:g} Å)")
    volume = abs(float(np.linalg.det(matrix)))
    present = np.unique(numbers)
    thr = rule.thresholds(present[:, None], present[None, :])
    densest = (math.sqrt(2.0) * volume / n) ** (1.0 / 3.0)    # no packing of n spheres keeps them further apart
    if densest < thr.min():
        return Verdict(False, densest, densest / float(thr.min()), reason=f"{n} atoms in {volume:.3g} Å³: some pair must be closer than {densest:.3g} Å")
    from pymatgen.optimization.neighbors import find_points_in_spheres

    cart = np.ascontiguousarray(frac @ matrix, dtype=np.float64)
    radius = max(float(thr.max()), REPORT_RADIUS_A)
    i, j, _, d = find_points_in_spheres(cart, cart, r=radius, pbc=np.array([1, 1, 1], np.int64),
                                        lattice=np.ascontiguousarray(matrix, dtype=np.float64), tol=1e-8)
    keep = (i != j) | (d > 1e-8)                       # an atom is not its own neighbour; its images are
    i, j, d = i[keep], j[keep], d[keep]
    if not len(d):
        return Verdict(True, math.inf, math.inf)
    closest = float(d.min())
    ratios = d / rule.thresholds(numbers[i], numbers[j])
    worst = float(ratios.min())
    short = ratios < 1.0
    if short.any():
        k = int(np.flatnonzero(short)[np.argmin(d[short])])
        from core.tokens import element_symbol

        return Verdict(False, closest, worst, f"{element_symbol(int(numbers[i[k]]))}–{element_symbol(int(numbers[j[k]]))} "
                                       f"{d[k]:.3g} Å apart")
    return Verdict(True, closest, worst)


def judge_row(G: int, L: np.ndarray, XYZ: np.ndarray, A: np.ndarray, W: np.ndarray,
              rule: OverlapRule | None = None) -> Verdict:
    """``judge`` for one token row (``L`` normalised, as the sampler returns it)."""
    frac, numbers = atoms_of_row(G, W, A, XYZ)
    return judge(frac, numbers, lattice_matrix(L, len(numbers)), rule or OverlapRule())
