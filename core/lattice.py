"""Lattice parameters: which are free in each crystal system, and the units the model works in.

Users see a, b, c in Å and α, β, γ in degrees. The model works in *normalised* units: lengths divided
by N^(1/3) (N = atoms in the conventional cell) and angles in radians, as the reference does. The
conversions live here only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from core.crystal_systems import LAST_SPACEGROUP, crystal_system

# Free lattice parameters (a, b, c, alpha, beta, gamma) per crystal system; rows are space groups 1..230.
_FREE = {
    "triclinic": (1, 1, 1, 1, 1, 1),
    "monoclinic": (1, 1, 1, 0, 1, 0),     # unique axis b
    "orthorhombic": (1, 1, 1, 0, 0, 0),
    "tetragonal": (1, 0, 1, 0, 0, 0),
    "trigonal": (1, 0, 1, 0, 0, 0),       # hexagonal axes
    "hexagonal": (1, 0, 1, 0, 0, 0),
    "cubic": (1, 0, 0, 0, 0, 0),
}


def _xp(array):
    """numpy for numpy input, jax.numpy for jax arrays and tracers."""
    return jnp if isinstance(array, jax.Array) else np


LATTICE_MASK = np.array([_FREE[crystal_system(g)] for g in range(1, 231)], dtype=bool)


def symmetrize(g, lattice):
    """Impose the crystal system on (a, b, c, α, β, γ) in Å and degrees; works on numpy or jax arrays.

    ``g`` is a scalar or an array broadcastable against ``lattice[..., 0]``.
    """
    xp = _xp(lattice)
    lattice = xp.asarray(lattice)
    g = xp.asarray(g)[..., None]
    a, b, c, alpha, beta, gamma = (lattice[..., i] for i in range(6))
    right = xp.full_like(a, 90.0)
    last = LAST_SPACEGROUP
    out = lattice
    out = xp.where(g <= last["triclinic"], out, xp.stack([a, b, c, right, beta, right], axis=-1))
    out = xp.where(g <= last["monoclinic"], out, xp.stack([a, b, c, right, right, right], axis=-1))
    out = xp.where(g <= last["orthorhombic"], out, xp.stack([a, a, c, right, right, right], axis=-1))
    out = xp.where(g <= last["tetragonal"], out, xp.stack([a, a, c, right, right, xp.full_like(a, 120.0)], axis=-1))
    out = xp.where(g <= last["hexagonal"], out, xp.stack([a, a, a, right, right, right], axis=-1))
    return out


def normalize(lattice, num_atoms):
    """(a, b, c [Å], α, β, γ [deg]) -> (lengths / N^(1/3), angles in radians): the model's units."""
    xp = _xp(lattice)
    scale = xp.asarray(num_atoms, dtype=lattice.dtype)[..., None] ** (1.0 / 3.0)
    return xp.concatenate([lattice[..., :3] / scale, lattice[..., 3:] * (xp.pi / 180.0)], axis=-1)


def denormalize(lattice, num_atoms):
    """Inverse of ``normalize``: back to Å and degrees."""
    xp = _xp(lattice)
    scale = xp.asarray(num_atoms, dtype=lattice.dtype)[..., None] ** (1.0 / 3.0)
    return xp.concatenate([lattice[..., :3] * scale, lattice[..., 3:] * (180.0 / xp.pi)], axis=-1)
