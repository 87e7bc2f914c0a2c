"""A crystal as CrystalFormer reads it: space group, Wyckoff sites, lattice.

``CrystalTokens`` is the bridge between a pymatgen ``Structure`` and the model's arrays:

    Structure  --from_structure-->  CrystalTokens  --to_arrays-->  (G, L, XYZ, A, W)
    Structure  <--to_structure---   CrystalTokens  <--from_arrays-- (sampler output)

and it has a human-readable string form, e.g. rock-salt-like LaH3:

    225-a-La-0-0-0-c-H-1/4-1/4-1/4-f-H-0.375-0.375-0.375-5.1-5.1-5.1-90-90-90

(space group; then per site: Wyckoff letter, element, x, y, z of the representative position, fixed
coordinates written as fractions; then a, b, c in Å and α, β, γ in degrees).

Sites are ordered as the reference does: by Wyckoff letter (a first), then by x, y, z.
Symmetry analysis: spglib through pymatgen (``core.symmetry.analyzer``, behind the sanity gate of
``core.structure_check``; ``symprec`` 0.01 Å) gives the refined conventional cell;
pyxtal assigns Wyckoff positions and representatives.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from core import lattice as lat
from core import wyckoff
from core.errors import InvalidInputError
from core.structure_check import require_sane
from core.symmetry import analyzer

DEFAULT_N_MAX = 21


def element_symbol(z: int) -> str:
    return Element.from_Z(int(z)).symbol


def atomic_number(symbol: str) -> int:
    """'Fe' -> 26; raises InvalidInputError for anything that is not an element symbol."""
    try:
        el = Element(symbol.strip())
    except (ValueError, KeyError, AttributeError):
        raise InvalidInputError(f"unknown element symbol {symbol!r}") from None
    return int(el.Z)


@dataclass
class CrystalTokens:
    """One crystal in CrystalFormer's terms (no padding).

    Attributes:
        spacegroup: 1..230.
        wyckoff: (n,) Wyckoff letter indices (a=1 … z=26, A=27).
        species: (n,) atomic numbers.
        coords: (n, 3) fractional coordinates of each orbit's representative, in [0, 1).
        lattice: (6,) a, b, c in Å and α, β, γ in degrees (conventional cell).
    """

    spacegroup: int
    wyckoff: np.ndarray
    species: np.ndarray
    coords: np.ndarray
    lattice: np.ndarray

    # ---- derived -------------------------------------------------------------------------------
    @property
    def num_sites(self) -> int:
        return len(self.wyckoff)

    @property
    def multiplicities(self) -> np.ndarray:
        return wyckoff.tables().mult[self.spacegroup - 1, self.wyckoff]

    @property
    def num_atoms(self) -> int:
        """Atoms in the conventional cell."""
        return int(self.multiplicities.sum())

    @property
    def formula(self) -> str:
        from pymatgen.core import Composition

        comp = Composition({element_symbol(z): int(m) for z, m in zip(self.species, self.multiplicities)})
        return comp.reduced_formula

    # ---- Structure <-> tokens -----------------------------------------------------------------
    @classmethod
    def from_structure(cls, structure: Structure, symprec: float = 0.01) -> "CrystalTokens":
        """Symmetry-analyse ``structure`` and express it as Wyckoff sites of its space group.

        Raises InvalidInputError for structures ``core.structure_check`` refuses (disordered, non-finite,
        degenerate, absurd) or when the analysis fails.
        """
        crystal, original = _pyxtal_crystal(structure, symprec)
        return _from_pyxtal(crystal, original)

    @classmethod
    def equivalents(cls, structure: Structure, limit: int = 8, symprec: float = 0.01,
                    seed: int = 0) -> list["CrystalTokens"]:
        """Equivalent descriptions of one crystal: the canonical tokens first (``from_structure``), then
        those of the same crystal after the affine normalizer's Wyckoff-set transformations (origin
        shifts, axis choices: e.g. Na on 4a and Cl on 4b in Fm-3m, or the other way round), as pyxtal's
        ``get_alternatives`` lists them. Each is checked to rebuild the same crystal (pymatgen
        ``StructureMatcher``); duplicates and failures are dropped. At most ``limit`` are returned (a
        random choice, fixed by ``seed``, when there are more): for training-data augmentation.

        Raises InvalidInputError as ``from_structure`` does.
        """
        crystal, original = _pyxtal_crystal(structure, symprec)
        first = _from_pyxtal(crystal, original)
        out = [first]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                alternatives = crystal.get_alternatives()[1:]
        except Exception:  # noqa: BLE001 - no alternatives is a valid answer for augmentation
            alternatives = []
        order = np.random.default_rng(seed).permutation(len(alternatives))
        reference = first.to_structure()
        seen = {first.key()}
        for i in order:
            if len(out) >= limit:
                break
            try:
                tokens = _from_pyxtal(alternatives[i], original, representatives=True)
                if tokens.key() in seen or not _same_crystal(reference, tokens.to_structure()):
                    continue
            except Exception:  # noqa: BLE001 - an alternative that does not rebuild is skipped
                continue
            seen.add(tokens.key())
            out.append(tokens)
        return out

    def key(self, digits: int = 3) -> tuple:
        """Hashable summary for spotting identical descriptions (coordinates rounded, mod 1)."""
        x = np.round(np.asarray(self.coords, float) % 1.0, digits) % 1.0
        return (self.spacegroup, tuple(self.wyckoff), tuple(self.species), tuple(map(tuple, x)))

    def sorted(self) -> "CrystalTokens":
        """Sites ordered by Wyckoff letter, then x, y, z (the reference's ``sort_atoms``)."""
        order = np.lexsort((self.coords[:, 2], self.coords[:, 1], self.coords[:, 0], self.wyckoff))
        return CrystalTokens(self.spacegroup, self.wyckoff[order], self.species[order], self.coords[order], self.lattice)

    def to_structure(self, merge_tol: float = 1e-3) -> Structure:
        """Apply the space group's Wyckoff operations to every representative and build the cell.

        Raises InvalidInputError for an impossible lattice (non-finite, non-positive, angles that
        do not close a cell).
        """
        L = np.asarray(self.lattice, dtype=float)
        if not np.all(np.isfinite(L)) or np.any(L[:3] <= 0) or np.any(L[3:] <= 0) or np.any(L[3:] >= 180):
            raise InvalidInputError(f"impossible lattice parameters {np.round(L, 4).tolist()}")
        lattice = Lattice.from_parameters(*L)
        if not np.isfinite(lattice.volume) or lattice.volume <= 1e-6:
            raise InvalidInputError(f"lattice parameters {np.round(L, 4).tolist()} do not form a cell")
        species, coords = [], []
        for w, z, xyz in zip(self.wyckoff, self.species, self.coords):
            points = _unique_periodic(wyckoff.orbit(self.spacegroup, int(w), xyz), merge_tol)
            species += [element_symbol(z)] * len(points)
            coords.append(points)
        if not species:
            raise InvalidInputError("crystal has no sites")
        frac = np.concatenate(coords)
        if not np.isfinite(frac).all():   # the model's coordinates, before anything feeds them to spglib
            raise InvalidInputError("crystal has non-finite atomic coordinates")
        return Structure(lattice, species, frac)

    # ---- arrays for the model -----------------------------------------------------------------
    def to_arrays(self, n_max: int = DEFAULT_N_MAX) -> dict[str, np.ndarray]:
        """Padded arrays: G (), L (6,) normalised, XYZ (n_max, 3), A, W (n_max,)."""
        n = self.num_sites
        if n >= n_max:
            raise InvalidInputError(f"{self.formula} has {n} symmetry-inequivalent sites; the model allows at most {n_max - 1}")
        W = np.zeros(n_max, np.int32)
        A = np.zeros(n_max, np.int32)
        XYZ = np.zeros((n_max, 3), np.float32)
        W[:n], A[:n], XYZ[:n] = self.wyckoff, self.species, self.coords
        L = lat.normalize(np.asarray(self.lattice, np.float64), self.num_atoms).astype(np.float32)
        return {"G": np.int32(self.spacegroup), "L": L, "XYZ": XYZ, "A": A, "W": W}

    @classmethod
    def from_arrays(cls, G, L, XYZ, A, W, normalized: bool = True) -> "CrystalTokens":
        """From one padded row of model arrays; ``L`` normalised unless ``normalized=False``."""
        G = int(G)
        W = np.asarray(W, int)
        A = np.asarray(A, int)
        keep = (W > 0) & (A > 0)
        mult = wyckoff.tables().mult[G - 1, W[keep]]
        L = np.asarray(L, np.float64)
        lattice = lat.denormalize(L, mult.sum()) if normalized else L
        return cls(G, W[keep], A[keep], np.asarray(XYZ, np.float64)[keep], lattice)

    # ---- string form --------------------------------------------------------------------------
    def to_string(self, digits: int = 4) -> str:
        parts = [str(self.spacegroup)]
        free = wyckoff.tables().fc_mask[self.spacegroup - 1]
        for w, z, xyz in zip(self.wyckoff, self.species, self.coords):
            parts += [wyckoff.index_to_letter(w), element_symbol(z)]
            parts += [_fmt_coord(v, bool(f), digits) for v, f in zip(xyz, free[w])]
        parts += [_fmt(v, digits) for v in self.lattice]
        return "-".join(parts)

    @classmethod
    def from_string(cls, text: str) -> "CrystalTokens":
        """Parse the string form. Raises InvalidInputError naming what is wrong."""
        fields: list[str] = []
        negative = False
        for f in str(text).strip().split("-"):  # an empty field is the sign of the next number
            if f.strip() == "" and fields:
                negative = True
                continue
            fields.append(("-" if negative else "") + f.strip())
            negative = False
        if len(fields) < 1 + 5 + 6 or (len(fields) - 7) % 5:
            raise InvalidInputError(
                f"cannot parse {text!r}: expected 'G-(letter-element-x-y-z)...-a-b-c-alpha-beta-gamma' "
                f"(got {len(fields)} fields)")
        g = wyckoff.check_spacegroup(_int(fields[0]))
        w, a, x = [], [], []
        for i in range(1, len(fields) - 6, 5):
            letter, symbol, *xyz = fields[i:i + 5]
            wi = wyckoff.letter_to_index(letter)
            if wi > wyckoff.tables().wmax[g - 1]:
                raise InvalidInputError(f"space group {g} has no Wyckoff position {letter!r}")
            w.append(wi)
            a.append(atomic_number(symbol))
            point = np.array([wyckoff.parse_number(v) for v in xyz])
            x.append(wyckoff.project(g, wi, point))
        lattice = lat.symmetrize(g, np.array([wyckoff.parse_number(v) for v in fields[-6:]], float))
        return cls(g, np.array(w, int), np.array(a, int), np.array(x, float), lattice).sorted()

    def __str__(self) -> str:
        return self.to_string()


def stack(tokens: list[CrystalTokens], n_max: int = DEFAULT_N_MAX) -> dict[str, np.ndarray]:
    """Batch arrays (G (B,), L (B, 6), XYZ (B, n_max, 3), A (B, n_max), W (B, n_max))."""
    rows = [t.to_arrays(n_max) for t in tokens]
    return {k: np.stack([r[k] for r in rows]) for k in ("G", "L", "XYZ", "A", "W")}


def _unique_periodic(points: np.ndarray, tol: float) -> np.ndarray:
    keep: list[np.ndarray] = []
    for p in points:
        if all(np.abs((p - q) - np.round(p - q)).max() > tol for q in keep):
            keep.append(p)
    return np.array(keep)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(f"space group must be an integer 1..230, got {text!r}") from None


def _fmt(v: float, digits: int) -> str:
    s = f"{float(v):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _fmt_coord(v: float, free: bool, digits: int) -> str:
    """Fixed coordinates as simple fractions (1/4), free ones as decimals (0.375)."""
    if not free:
        frac = Fraction(float(v)).limit_denominator(12)
        if abs(float(frac) - v) < 1e-6:
            return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    return _fmt(v, digits)


def _pyxtal_crystal(structure: Structure, symprec: float):
    """(pyxtal crystal of the refined cell, {proxy symbol: original symbol}); the sanity gate runs first."""
    from pyxtal import pyxtal

    require_sane(structure, "cannot tokenise this structure", ordered=True)
    # pyxtal has no data for Z >= 106: stand in distinct lighter elements absent from the crystal
    present = {el.Z for el in structure.composition.elements}
    spare = (z for z in range(1, 100) if z not in present)
    proxies = {el.symbol: Element.from_Z(next(spare)).symbol
               for el in sorted(structure.composition.elements) if el.Z >= 104}
    if proxies:
        structure = structure.copy()
        structure.replace_species(proxies)
    try:
        refined = analyzer(structure, symprec, "cannot tokenise this structure").get_refined_structure()
        crystal = pyxtal()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                crystal.from_seed(refined, tol=0.01)
            except Exception:
                crystal.from_seed(refined, tol=0.0001)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"symmetry analysis failed ({type(exc).__name__}: {exc})") from None
    return crystal, {v: k for k, v in proxies.items()}


def _from_pyxtal(crystal, original: dict[str, str], representatives: bool = False) -> CrystalTokens:
    """Tokens of a pyxtal crystal. ``representatives``: replace each site's position by the member of its
    orbit that lies on the Wyckoff position's first coordinate triplet (pyxtal's transformed alternatives
    may hold another member; the model's coordinates are the first triplet's)."""
    g = int(crystal.group.number)
    w, a, x = [], [], []
    for site in crystal.atom_sites:
        wi = wyckoff.letter_to_index(site.wp.letter)
        w.append(wi)
        a.append(atomic_number(original.get(str(site.specie), str(site.specie))))
        pos = np.asarray(site.position, dtype=np.float64)
        x.append(_representative(g, wi, pos) if representatives else pos - np.floor(pos))
    cell = crystal.lattice
    lattice = np.array([cell.a, cell.b, cell.c, *np.degrees([cell.alpha, cell.beta, cell.gamma])])
    return CrystalTokens(g, np.array(w, int), np.array(a, int), np.array(x, float).reshape(-1, 3), lattice).sorted()


def _representative(g: int, w: int, point: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """The member of ``point``'s orbit that the Wyckoff position's first triplet maps onto itself (the
    orbit from the general position's operations, which map any member onto all the others)."""
    for member in wyckoff.orbit(g, int(wyckoff.tables().wmax[g - 1]), point):
        member = member - np.floor(member)
        projected = wyckoff.project(g, w, member)
        delta = projected - member
        if np.abs(delta - np.round(delta)).max() < tol:
            return projected
    raise InvalidInputError(f"no orbit member of {np.round(point, 4).tolist()} on Wyckoff position {w} of group {g}")


def _same_crystal(a: Structure, b: Structure) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return len(a) == len(b) and StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False).fit(a, b)
