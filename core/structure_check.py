"""The one finiteness and sanity gate every structure passes before symmetry, tokens, storage or drawing.

spglib and moyo are C/Rust libraries: a NaN or infinite lattice entry or coordinate can crash the whole
process (a segmentation fault, exit 139, for every user of the app) instead of raising. Every door into
them (``core.symmetry``, ``core.tokens``, ``core.shortlist``, ``core.view``, the structure readers, app
uploads and screens) therefore asks ``structure_problem`` first:

    structure_problem(obj) -> str | None      # one-line reason, or None when usable
    require_sane(obj, what) -> Structure      # the same, raising core.errors.InvalidInputError

The checks are cheap (array arithmetic on the lattice and the fractional coordinates; no neighbour list
unless ``min_distance`` is asked for), so callers can run them on every structure:

* a pymatgen ``Structure`` with at least one site (and ordered, where the caller needs order);
* finite lattice and fractional coordinates, coordinates within ``MAX_ABS_FRACTION`` cells of the origin;
* a cell with volume: not degenerate (``volume > MIN_VOLUME_A3``) nor nearly singular
  (``volume / (a b c) >= MIN_VOLUME_FACTOR``, i.e. the cell vectors are not almost coplanar);
* cell lengths at most ``MAX_LENGTH_A`` Å (the neighbour list's own bound);
* a density between ``MIN_VOLUME_PER_ATOM_A3`` and ``MAX_VOLUME_PER_ATOM_A3`` Å^3 per atom
  (condensed matter is 5-100 Å^3/atom);
* at most ``max_sites`` sites.

Model-specific refusals (elements a model does not cover, overlapping atoms for scoring) stay with the
models and the scoring pipeline's ``input_problem``, which can call this gate for the shared part.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pymatgen.core import Structure

from core.errors import InvalidInputError
from core.neighbors import MAX_EDGE_A

#: Most sites a structure may have (the app draws, stores and scores each one).
MAX_SITES = 1000
#: Smallest cell volume (Å^3) that is a cell at all.
MIN_VOLUME_A3 = 1e-3
#: Smallest volume / (a b c): below it the three cell vectors are nearly coplanar (a cube has 1).
MIN_VOLUME_FACTOR = 1e-4
#: Longest cell vector (Å): pymatgen's neighbour search grid spans the cell.
MAX_LENGTH_A = MAX_EDGE_A
#: Density bounds, Å^3 per atom: the densest solids hold ~3 (hydrides under pressure), gas-like cells 1e5.
MIN_VOLUME_PER_ATOM_A3 = 0.5
MAX_VOLUME_PER_ATOM_A3 = 1e5
#: Largest |fractional coordinate|: further out, wrapping into the cell loses the position to rounding.
MAX_ABS_FRACTION = 1e4


def structure_problem(obj: Any, *, ordered: bool = False, max_sites: int | None = MAX_SITES,
                      min_distance: float | None = None) -> str | None:
    """Why ``obj`` cannot be analysed, stored or drawn (a one-line reason), or None when it can.

    Args:
        obj: anything; only a pymatgen ``Structure`` can pass.
        ordered: also refuse partial occupancies (tokenisation, POSCAR, scoring need one species a site).
        max_sites: most sites allowed (None: no limit).
        min_distance: when given (Å), also refuse two atoms closer than this (periodic images included).
    """
    if not isinstance(obj, Structure):
        return f"not a pymatgen Structure ({type(obj).__name__})"
    n = len(obj)
    if n == 0:
        return "empty structure (no sites)"
    if max_sites is not None and n > max_sites:
        return f"too many sites ({n} > {max_sites})"
    if ordered and not obj.is_ordered:
        return "disordered structure (partial occupancies are not supported here)"
    matrix = np.asarray(obj.lattice.matrix, dtype=float)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        return "non-finite lattice (NaN or infinite numbers in the cell)"
    frac = np.asarray(obj.frac_coords, dtype=float)
    if frac.shape != (n, 3) or not np.isfinite(frac).all():
        return "non-finite atomic coordinates (NaN or infinite)"
    if np.abs(frac).max() > MAX_ABS_FRACTION:
        return f"atomic coordinates more than {MAX_ABS_FRACTION:g} cells from the origin"
    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.max() > MAX_LENGTH_A:
        return f"absurd cell: a lattice vector of {lengths.max():.4g} Å (> {MAX_LENGTH_A:g} Å)"
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > MIN_VOLUME_A3:
        return f"degenerate cell (volume {volume:.3g} Å^3)"
    if volume / float(np.prod(lengths)) < MIN_VOLUME_FACTOR:
        return "degenerate cell (lattice vectors nearly coplanar)"
    per_atom = volume / n
    if per_atom < MIN_VOLUME_PER_ATOM_A3:
        return f"absurd density ({per_atom:.3g} Å^3/atom < {MIN_VOLUME_PER_ATOM_A3:g})"
    if per_atom > MAX_VOLUME_PER_ATOM_A3:
        return f"absurd density ({per_atom:.3g} Å^3/atom > {MAX_VOLUME_PER_ATOM_A3:g}: mostly empty space)"
    if min_distance is not None:
        dist = obj.get_neighbor_list(r=float(min_distance))[3]   # includes an atom's own periodic images
        if len(dist):
            return f"overlapping atoms (shortest distance {float(dist.min()):.3g} Å < {min_distance:g} Å)"
    return None


def require_sane(obj: Any, what: str = "structure", *, ordered: bool = False,
                 max_sites: int | None = MAX_SITES, min_distance: float | None = None) -> Structure:
    """``obj`` itself when ``structure_problem`` finds nothing wrong with it.

    Raises:
        InvalidInputError: ``"<what>: <reason>"``, e.g. ``"cannot tokenise: non-finite atomic coordinates"``.
    """
    problem = structure_problem(obj, ordered=ordered, max_sites=max_sites, min_distance=min_distance)
    if problem is not None:
        raise InvalidInputError(f"{what}: {problem}")
    return obj
