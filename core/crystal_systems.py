"""The seven crystal systems by space-group number: the one table every module reads.

Space groups are numbered so that each crystal system is a contiguous range (International Tables
for Crystallography A): triclinic 1-2, monoclinic 3-15, orthorhombic 16-74, tetragonal 75-142,
trigonal 143-167, hexagonal 168-194, cubic 195-230.
"""
from __future__ import annotations

import numpy as np

#: (name, last space-group number of the system), in space-group order.
CRYSTAL_SYSTEMS = (
    ("triclinic", 2), ("monoclinic", 15), ("orthorhombic", 74), ("tetragonal", 142),
    ("trigonal", 167), ("hexagonal", 194), ("cubic", 230),
)
LAST_SPACEGROUP = dict(CRYSTAL_SYSTEMS)
#: Last space group of each family of lattice parameters: trigonal groups are described on hexagonal
#: axes (a = b, γ = 120°), so trigonal and hexagonal share one family.
LATTICE_FAMILY_LAST = tuple(last for name, last in CRYSTAL_SYSTEMS if name != "trigonal")


def crystal_system(g: int) -> str:
    """The crystal system of space group ``g`` (1..230)."""
    return next(name for name, last in CRYSTAL_SYSTEMS if g <= last)


def lattice_family(g):
    """Index (0..5) of the lattice-parameter family of space group(s) ``g``, in ``LATTICE_FAMILY_LAST`` order."""
    return np.searchsorted(LATTICE_FAMILY_LAST, g)
