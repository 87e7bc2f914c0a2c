"""Wyckoff positions of the 230 space groups, from the tables pyxtal ships.

Token convention (the paper's and the reference implementation's): Wyckoff letters are numbered
``a=1 … z=26, A=27`` and ``0`` is padding / "stop". Within a space group the letters run from the
most special position (``a``, smallest multiplicity) to the general position (largest letter).

Only small dense tables are built (a few hundred kB, once, lazily):

* ``mult_table[g-1, w]``      multiplicity of Wyckoff position w in the conventional cell
* ``wmax_table[g-1]``         number of Wyckoff letters of group g
* ``dof0_table[g-1, w]``      True when the position has no free coordinate (then a letter cannot repeat)
* ``fc_mask_table[g-1, w]``   (3,) True for the coordinates x, y, z that are free
* ``first_op_table[g-1, w]``  (3, 4) affine operation of the position's first (representative) orbit
  member; applying it projects any point onto the position

The full orbit operations (needed to build a Structure) are returned per group by ``wyckoff_ops(g)``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from core.crystal_systems import crystal_system as _system_of
from core.errors import InvalidInputError

NUM_SPACEGROUPS = 230
LETTERS = "abcdefghijklmnopqrstuvwxyzA"  # index 1..27; 0 is padding
WYCK_TYPES = len(LETTERS) + 1  # 28



def check_spacegroup(g: int) -> int:
    """Return g as int if it is a space group number 1..230, else raise InvalidInputError."""
    try:
        gi = int(g)
    except (TypeError, ValueError):
        raise InvalidInputError(f"space group must be an integer 1..230, got {g!r}") from None
    if gi != g or not 1 <= gi <= NUM_SPACEGROUPS:
        raise InvalidInputError(f"space group must be an integer 1..230, got {g!r}")
    return gi


def letter_to_index(letter: str) -> int:
    """'a' -> 1 … 'z' -> 26, 'A' -> 27."""
    idx = LETTERS.find(letter)
    if len(letter) != 1 or idx < 0:
        raise InvalidInputError(f"unknown Wyckoff letter {letter!r} (expected a-z or A)")
    return idx + 1


def index_to_letter(w: int) -> str:
    if not 1 <= int(w) <= len(LETTERS):
        raise InvalidInputError(f"Wyckoff index must be 1..27, got {w}")
    return LETTERS[int(w) - 1]


def crystal_system(g: int) -> str:
    """The crystal system of space group ``g``, checked to be 1..230 (``core.crystal_systems``)."""
    return _system_of(check_spacegroup(g))


@functools.cache
def wyckoff_ops(g: int) -> tuple[np.ndarray, ...]:
    """Orbit operations of every Wyckoff position of group g, letter a first.

    Returns a tuple indexed by ``w - 1``; element ``w-1`` is an array (multiplicity, 3, 4) of affine
    operations (rotation | translation) acting on fractional coordinates.
    """
    from pyxtal.symmetry import get_wyckoffs

    g = check_spacegroup(g)
    positions = get_wyckoffs(g)[::-1]  # pyxtal lists the general position first
    return tuple(np.array([op.affine_matrix[:3, :4] for op in wp]) for wp in positions)


@dataclass(frozen=True)
class WyckoffTables:
    mult: np.ndarray       # (230, 28) int32
    wmax: np.ndarray       # (230,) int32
    dof0: np.ndarray       # (230, 28) bool
    fc_mask: np.ndarray    # (230, 28, 3) bool
    first_op: np.ndarray   # (230, 28, 3, 4) float64


@functools.cache
def tables() -> WyckoffTables:
    """Dense per-(group, letter) tables; padding rows follow the reference (dof0 True, mult 0).

    Built from pyxtal once and kept in the cache folder (keyed by pyxtal's version).
    """
    import pyxtal

    from core import settings

    path = settings.cache_dir() / f"wyckoff_tables_pyxtal-{pyxtal.__version__}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return WyckoffTables(*(z[f] for f in ("mult", "wmax", "dof0", "fc_mask", "first_op")))
        except (OSError, ValueError, KeyError):
            pass  # rebuilt below
    built = _build_tables()
    try:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **built.__dict__)
        tmp.replace(path)
    except OSError:
        pass
    return built


def _build_tables() -> WyckoffTables:
    mult = np.zeros((NUM_SPACEGROUPS, WYCK_TYPES), dtype=np.int32)
    wmax = np.zeros((NUM_SPACEGROUPS,), dtype=np.int32)
    dof0 = np.ones((NUM_SPACEGROUPS, WYCK_TYPES), dtype=bool)
    fc_mask = np.zeros((NUM_SPACEGROUPS, WYCK_TYPES, 3), dtype=bool)
    first_op = np.zeros((NUM_SPACEGROUPS, WYCK_TYPES, 3, 4), dtype=np.float64)
    for g in range(1, NUM_SPACEGROUPS + 1):
        ops = wyckoff_ops(g)
        wmax[g - 1] = len(ops)
        for w, orbit_ops in enumerate(ops, start=1):
            rot = orbit_ops[0, :, :3]
            mult[g - 1, w] = len(orbit_ops)
            dof0[g - 1, w] = np.linalg.matrix_rank(rot) == 0
            fc_mask[g - 1, w] = np.abs(rot).sum(axis=1) != 0
            first_op[g - 1, w] = orbit_ops[0]
    return WyckoffTables(mult, wmax, dof0, fc_mask, first_op)


def orbit(g: int, w: int, xyz: np.ndarray) -> np.ndarray:
    """All positions (multiplicity, 3) in [0, 1) generated from a representative ``xyz`` of Wyckoff w."""
    ops = wyckoff_ops(g)
    if not 1 <= w <= len(ops):
        raise InvalidInputError(f"space group {g} has Wyckoff letters a..{LETTERS[len(ops) - 1]}, got {index_to_letter(w)}")
    point = np.append(np.asarray(xyz, dtype=np.float64), 1.0)
    coords = ops[w - 1] @ point
    return coords - np.floor(coords)


def project(g: int, w: int, xyz: np.ndarray) -> np.ndarray:
    """Project a point onto Wyckoff position w (its first orbit member), wrapped into [0, 1)."""
    x = tables().first_op[g - 1, w] @ np.append(np.asarray(xyz, dtype=np.float64), 1.0)
    return x - np.floor(x)


@dataclass(frozen=True)
class WyckoffPosition:
    """One row of a space group's Wyckoff table, as a crystallographer reads it."""

    letter: str
    multiplicity: int
    site_symmetry: str
    coordinates: tuple[str, ...]  # e.g. ("x, x, x", "-x, -x, x", ...)
    free: tuple[bool, bool, bool]


@functools.cache
def wyckoff_table(g: int) -> tuple[WyckoffPosition, ...]:
    """The space group's Wyckoff positions, letter a first (for display and teaching)."""
    from pyxtal.symmetry import Group

    group = Group(check_spacegroup(g))
    rows = []
    for w, wp in enumerate(group.Wyckoff_positions[::-1], start=1):
        wp.get_site_symmetry()  # fills wp.site_symm
        rows.append(WyckoffPosition(
            letter=wp.letter,
            multiplicity=int(wp.multiplicity),
            site_symmetry=str(wp.site_symm),
            coordinates=tuple(op.as_xyz_str() for op in wp.ops),
            free=tuple(bool(f) for f in tables().fc_mask[g - 1, w]),
        ))
    return tuple(rows)


@functools.cache
def spacegroup_symbol(g: int) -> str:
    """Hermann–Mauguin symbol, e.g. 225 -> 'Fm-3m'."""
    return _symbols()[check_spacegroup(g)]


@functools.cache
def _symbols() -> dict[int, str]:
    """Short Hermann–Mauguin symbol of each group in its standard setting (spglib's first Hall setting, written
    without underscores: identical to pyxtal's ``Group(g).symbol`` for all 230; 8 ms for the table where
    building 230 pyxtal Groups takes 2 s)."""
    import spglib

    symbols: dict[int, str] = {}
    for hall in range(1, 531):
        kind = spglib.get_spacegroup_type(hall)
        symbols.setdefault(int(kind.number), kind.international_short.replace("_", ""))
    return symbols


def spacegroup_label(g: int) -> str:
    """'225 Fm-3m (cubic)' for pickers and tables."""
    return f"{g} {spacegroup_symbol(g)} ({crystal_system(g)})"


_FRACTION_RE = re.compile(r"^\s*([+-]?\d+)\s*/\s*(\d+)\s*$")


def parse_number(text: str) -> float:
    """Parse '0.375', '1/4' or '-1/3' into a float."""
    m = _FRACTION_RE.match(text)
    try:
        return int(m.group(1)) / int(m.group(2)) if m else float(text)
    except (ValueError, ZeroDivisionError):
        raise InvalidInputError(f"not a number or fraction: {text!r}") from None
