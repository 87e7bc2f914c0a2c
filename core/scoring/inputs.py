"""The one input screen of the scorers: what a structure must be before any model sees it.

``input_problem(structure)`` returns a one-line reason (or None); the pipeline writes it into the
row's ``error`` and every model's own check (``core.scoring.mlip.check_structure``) starts with it, then
adds what only that model can say (an element it was not trained on, an atom with no neighbour within
its cutoff).

Limits (``InputLimits``): at most 500 atoms per cell. The scoring pipeline has always refused larger
cells before any model, so no scored row ever saw the models' former 2000-atom bound; the largest
reference structure the models compute for the hulls has 288 atoms (matbench_dielectric; the MP hull
sets: 160), so the one bound leaves every number as it was. Time and memory grow with the atoms, and a
generated cell that large is almost always a broken one. Uploads are read up to 1000 sites
(``core.export.MAX_SITES``, so a user sees them) and get this message when scored.

The pipeline's screen (``SCORING_LIMITS``) is the same function with two bounds a model does not need:
cells under 0.1 Å³ (the structure-validity bound) and above 1000 Å³/atom (gas-like); a model's own
screen names the precise reason instead (too dense to list neighbours, an isolated atom).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure

from core.neighbors import MAX_EDGE_A as NEIGHBOR_MAX_EDGE_A
from core.structure_check import structure_problem
from core.scoring.metrics import MIN_DISTANCE_A, MIN_VOLUME_A3, min_interatomic_distance


@dataclass(frozen=True)
class InputLimits:
    """What a structure may look like before a model sees it.

    Attributes:
        max_atoms: most sites per structure (memory and time grow with it).
        max_edge_a: longest lattice vector, Å (default: the longest a neighbour list is built for).
        min_distance_a: closest allowed pair of atoms, Å (the project's structure-validity bound).
        min_volume_a3: smallest cell volume, Å³: for a model the numerical floor (a smaller, collapsed
            cell is then refused by the neighbour list, which says it is too dense to list); for the
            pipeline the validity bound ``core.scoring.metrics.MIN_VOLUME_A3``.
        max_volume_per_atom_a3: largest volume per atom, Å³/atom (condensed matter is 5-100); None: no
            bound. A model needs none (its own check names the atom with no neighbour within its cutoff,
            the precise reason a sparse cell cannot be evaluated); the pipeline's screen, before any
            model, refuses gas-like cells with it (``SCORING_LIMITS``).
    """

    max_atoms: int = 500
    max_edge_a: float = NEIGHBOR_MAX_EDGE_A
    min_distance_a: float = MIN_DISTANCE_A
    min_volume_a3: float = 1e-6
    max_volume_per_atom_a3: float | None = None


DEFAULT_LIMITS = InputLimits()                                   # every model's screen
SCORING_LIMITS = InputLimits(min_volume_a3=MIN_VOLUME_A3, max_volume_per_atom_a3=1000.0)   # the pipeline's


def input_problem(structure: Any, limits: InputLimits = SCORING_LIMITS, *, distances: bool = True) -> str | None:
    """Why ``structure`` cannot be scored by any model (a one-line message), or None when it can.

    ``distances=False`` leaves out the closest-pair check: a model's screen judges it on the neighbour
    list it builds anyway (one list for overlapping and isolated atoms, and a cell too dense to list is
    named as such).
    """
    if not isinstance(structure, Structure):
        return f"not a pymatgen Structure ({type(structure).__name__})"
    if len(structure) == 0:
        return "empty structure (no sites)"
    if not structure.is_ordered:
        return "disordered structure (partial occupancies are not supported)"
    if not np.all(np.isfinite(structure.lattice.matrix)):
        return "non-finite lattice (NaN or inf in the cell)"
    if not np.all(np.isfinite(structure.frac_coords)):
        return "non-finite atomic coordinates"
    volume = float(structure.volume)
    if not volume >= limits.min_volume_a3:
        return f"degenerate cell (volume {volume:.3g} Å^3)"
    if len(structure) > limits.max_atoms:
        return f"too many atoms: {len(structure)} > {limits.max_atoms} (too many sites for the scorers)"
    if limits.max_volume_per_atom_a3 is not None and volume / len(structure) > limits.max_volume_per_atom_a3:
        return f"huge cell ({volume / len(structure):.3g} Å^3/atom > {limits.max_volume_per_atom_a3:g})"
    longest = float(max(structure.lattice.abc))
    if longest > limits.max_edge_a:
        return f"huge cell: lattice vector of {longest:.4g} Å > {limits.max_edge_a:g} Å"
    if not distances:
        return None   # a model's own screen: its neighbour list names a cell too dense to list
    distance = min_interatomic_distance(structure)
    if not distance >= limits.min_distance_a:
        return f"overlapping atoms (shortest distance {distance:.3g} Å < {limits.min_distance_a} Å)"
    # last, what only the project-wide gate refuses (coordinates far outside the cell, near-singular cells)
    return structure_problem(structure, ordered=True, max_sites=limits.max_atoms)
