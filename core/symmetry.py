"""Space-group detection (spglib), computed once per structure content.

Scoring asks for the space group of the same crystal several times (the table's column, a descriptor
of the dielectric model, the feasibility check that the relaxed crystal kept its symmetry). For the
high-symmetry cells the model generates (e.g. Fm-3m conventional cells of tens of atoms) one spglib
call at 0.1 Å takes ~20 ms on a CPU, so the answer is memoised by the cell's content: lattice (Å),
fractional coordinates and atomic numbers, bit for bit. Two structures with the same content share
the answer whatever their Python identity; a structure edited in place gets a new key.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
from pymatgen.core import Structure

SYMPREC_A = 0.1   # Å, the tolerance generated crystals are judged at (CrystalFormer, MatterGen use 0.1)


def _cell_key(structure: Structure) -> tuple[bytes, int]:
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64)
    frac = np.ascontiguousarray(structure.frac_coords, dtype=np.float64)
    numbers = np.asarray(structure.atomic_numbers, dtype=np.int64)
    digest = hashlib.blake2b(lattice.tobytes() + frac.tobytes() + numbers.tobytes(), digest_size=16).digest()
    return digest, len(numbers)


_CACHE: OrderedDict[tuple[bytes, int, float], int | None] = OrderedDict()
_CACHE_SIZE = 4096
_LOCK = threading.Lock()


def space_group_number(structure: Structure, symprec: float = SYMPREC_A) -> int | None:
    """International space-group number of ``structure`` found by spglib at tolerance ``symprec`` (Å).

    Returns None when spglib finds no space group or fails on the cell (the cell is not an error).
    """
    import spglib

    key = (*_cell_key(structure), float(symprec))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    try:
        dataset = spglib.get_symmetry_dataset(
            (structure.lattice.matrix, structure.frac_coords, structure.atomic_numbers), symprec=symprec)
        number = int(dataset.number) if dataset is not None else None
    except Exception:  # noqa: BLE001 - spglib failures (degenerate cells) mean "no space group"
        number = None
    with _LOCK:
        _CACHE[key] = number
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return number


def clear_cache() -> None:
    """Forget every memoised space group (benchmarks timing spglib on structures seen before)."""
    with _LOCK:
        _CACHE.clear()
