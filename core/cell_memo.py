"""Answers about a crystal, memoised by the crystal's content.

Scoring asks the same questions of one structure several times: its space group (the table's column,
a descriptor of the dielectric model, the feasibility check) and its neighbours (every model's input
screen, the dielectric descriptors). ``CellMemo`` keeps each answer under a key made of the cell's
content, bit for bit: lattice (Å), fractional coordinates and atomic numbers. Two structures with the
same content share an answer whatever their Python identity; a structure edited in place gets a new
key, so an answer never goes stale.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from pymatgen.core import Element, Structure

T = TypeVar("T")


@dataclass(frozen=True)
class Cell:
    """A structure's content as contiguous arrays: lattice (3, 3) Å, fractional coordinates (n, 3),
    atomic numbers (n,), and the blake2b digest of the three."""

    lattice: np.ndarray
    frac_coords: np.ndarray
    numbers: np.ndarray
    key: bytes

    @classmethod
    def of(cls, structure: Structure) -> Cell:
        lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64)
        frac = np.ascontiguousarray(structure.frac_coords, dtype=np.float64)
        numbers = np.asarray(structure.atomic_numbers, dtype=np.int64)
        key = hashlib.blake2b(lattice.tobytes() + frac.tobytes() + numbers.tobytes(), digest_size=16).digest()
        return cls(lattice, frac, numbers, key)

    def element_symbols(self) -> set[str]:
        """The chemical symbols present."""
        return {_symbols()[z] for z in set(self.numbers.tolist())}

    @functools.cached_property
    def volume(self) -> float:
        """Cell volume, Å³ (NaN for non-finite numbers)."""
        return abs(float(np.linalg.det(self.lattice)))

    @property
    def finite(self) -> bool:
        """Finite numbers and a cell volume above 1e-6 Å³."""
        return bool(np.all(np.isfinite(self.lattice)) and np.all(np.isfinite(self.frac_coords))
                    and self.volume > 1e-6)


@functools.cache
def _symbols() -> tuple[str, ...]:
    return ("X", *(Element.from_Z(z).symbol for z in range(1, 119)))


class CellMemo(Generic[T]):
    """A thread-safe least-recently-used store of answers keyed by cell content (plus any parameters).

    Args:
        size: most answers kept.
        weight: the size of one answer (e.g. its number of atom pairs); default 1 each.
        max_weight: most total weight kept (the oldest answers go first; the newest always stays).
    """

    def __init__(self, size: int, weight: Callable[[T], int] | None = None, max_weight: int | None = None) -> None:
        self.size = size
        self._weight = weight or (lambda _: 1)
        self._max_weight = max_weight
        self._total = 0
        self._store: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The stored answer for ``key``, or ``compute()`` stored under it (computed outside the lock)."""
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                return self._store[key]
        value = compute()
        with self._lock:
            if key not in self._store:
                self._store[key] = value
                self._total += self._weight(value)
            while len(self._store) > 1 and (len(self._store) > self.size or (
                    self._max_weight is not None and self._total > self._max_weight)):
                self._total -= self._weight(self._store.popitem(last=False)[1])
        return value

    def clear(self) -> None:
        """Forget every answer (benchmarks that time the first computation)."""
        with self._lock:
            self._store.clear()
            self._total = 0
