"""Neighbour lists, found once per structure content.

One list of the atom pairs within ``RADIUS_A`` of each other serves every question scoring asks about
a structure's neighbours: each model's input screen (overlapping atoms, an atom with no neighbour
within the model's cutoff) and the dielectric model's coordination descriptors. Before, each model
built its own list of the same structure. Pairs come from pymatgen's ``find_points_in_spheres`` with
the arguments ``Structure.get_neighbor_list`` gives it, so the list is the same, pair for pair:
periodic images count (an atom's own images too), the atom itself does not.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from core.cell_memo import Cell, CellMemo

RADIUS_A = 6.0          # Å; covers the cutoffs of the models we ship (M3GNet 5, MEGNet 4, ε descriptors 6)
NUMERICAL_TOL = 1e-8    # Å; pymatgen's: a pair closer than this between an atom and itself is the atom itself
MAX_EDGE_A = 500.0      # Å; pymatgen's search grid spans the cell: a 10^4 Å cell would need ~100 GB
MAX_PAIRS = 5_000_000   # ~250 MB; a generated cell of 20 atoms in 10^-5 Å³ would ask for 10^10 pairs


@dataclass(frozen=True)
class NeighborList:
    """All pairs (centre, neighbour) of atoms within ``radius`` Å, ordered by centre.

    Attributes:
        cell: the structure's content the list was found for.
        radius: search radius, Å.
        centres, neighbours: site indices of each pair (every pair appears from both ends).
        images: (pairs, 3) lattice translation of the neighbour's periodic image, in cell vectors.
        distances: pair distances, Å.
        nearest: each site's nearest-neighbour distance, Å (inf when none lies within ``radius``).
    """

    cell: Cell
    radius: float
    centres: np.ndarray
    neighbours: np.ndarray
    images: np.ndarray
    distances: np.ndarray
    nearest: np.ndarray


def _find(cell: Cell, cart: np.ndarray, radius: float) -> NeighborList:
    from pymatgen.optimization.neighbors import find_points_in_spheres

    centres, neighbours, images, distances = find_points_in_spheres(
        cart, cart, r=float(radius), pbc=np.array([1, 1, 1], dtype=np.int64), lattice=cell.lattice, tol=NUMERICAL_TOL)
    keep = (centres != neighbours) | (distances > NUMERICAL_TOL)
    centres, neighbours, images, distances = centres[keep], neighbours[keep], images[keep], distances[keep]
    nearest = np.full(len(cell.numbers), np.inf)
    np.minimum.at(nearest, centres, distances)
    for array in (centres, neighbours, images, distances, nearest):
        array.setflags(write=False)  # shared by every caller of the memo
    return NeighborList(cell, float(radius), centres, neighbours, images, distances, nearest)


# bounded by pairs (~50 bytes each) as well as lists: a 500-atom cell holds ~10^5 pairs within 6 Å
_MEMO: CellMemo[NeighborList] = CellMemo(2048, weight=lambda nl: len(nl.distances) + 1, max_weight=2_000_000)


_TRANSIENT: contextvars.ContextVar[bool] = contextvars.ContextVar("neighbor_lists_unmemoised", default=False)


@contextlib.contextmanager
def unmemoised() -> Iterator[None]:
    """Within this context (this thread or task only) ``neighbor_list`` computes without storing: for
    geometries met once, such as every step of a relaxation, which would otherwise fill the memo
    (2048 lists) and push out the lists of the structures being scored."""
    token = _TRANSIENT.set(True)
    try:
        yield
    finally:
        _TRANSIENT.reset(token)


def neighbor_list(structure: Structure, radius: float = RADIUS_A, cell: Cell | None = None) -> NeighborList:
    """The pairs of atoms of ``structure`` within ``radius`` Å, memoised by content and radius
    (``cell``: ``Cell.of(structure)``, when the caller has it already; not memoised inside ``unmemoised()``).

    Raises:
        ValueError: non-finite numbers, a cell without volume, a lattice vector longer than ``MAX_EDGE_A``,
            or atoms so dense that the list would exceed ``MAX_PAIRS`` pairs.
    """
    cell = cell if cell is not None else Cell.of(structure)
    if not cell.finite:
        raise ValueError("non-finite or degenerate cell: no neighbour list")
    longest = float(np.linalg.norm(cell.lattice, axis=1).max())
    if longest > MAX_EDGE_A:
        raise ValueError(f"huge cell: lattice vector of {longest:.4g} Å > {MAX_EDGE_A:g} Å, no neighbour list")
    atoms, volume = len(cell.numbers), cell.volume
    expected = atoms * atoms * 4 / 3 * np.pi * radius ** 3 / volume   # pairs at this density
    if expected > MAX_PAIRS:
        raise ValueError(f"too dense for a neighbour list: ~{expected:.2g} atom pairs within {radius:g} Å "
                         f"({atoms} atoms in {volume:.3g} Å³)")
    def compute() -> NeighborList:
        return _find(cell, np.ascontiguousarray(structure.cart_coords, dtype=np.float64), radius)

    return compute() if _TRANSIENT.get() else _MEMO.get((cell.key, float(radius)), compute)


def clear_cache() -> None:
    """Forget every memoised neighbour list."""
    _MEMO.clear()
