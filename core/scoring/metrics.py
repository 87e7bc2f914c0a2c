"""Generation metrics, named as CDVAE / MatterGen / CrystalFormer-RL use them.

* **structure validity**: every interatomic distance (periodic images included) ≥ 0.5 Å and the cell
  volume ≥ 0.1 Å^3 (CDVAE's definition, used by MatterGen and DiffCSP).
* **composition validity**: SMACT charge neutrality with the Pauling electronegativity test; single
  elements and all-metal compositions (alloys) count as valid. Oxidation states: SMACT's default
  "smact14" set, as CDVAE's ``smact_validity`` used them.
* **uniqueness**: a structure is unique when it matches no *earlier* structure of the same set
  (the first of a group of duplicates counts); uniqueness rate = unique / all.
* **novelty**: matches no structure of the training set.
  Both use ``pymatgen StructureMatcher()`` with its default tolerances (ltol 0.2, stol 0.3,
  angle_tol 5°), as MatterGen does; candidates are bucketed by reduced formula first, so a training
  set of many thousand structures costs one dictionary lookup plus a few matches per structure.
* **stability**: E_hull < 0.1 eV/atom on a hull that can judge the row (``core.scoring.sanity``); the
  rate is over judged rows and the unjudged share is reported beside it. **S.U.N.**: stable, unique and novel.
* **match rate / RMSD** between a generated structure and its relaxed version:
  ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist``. The RMSD is pymatgen's
  normalised RMS displacement (divided by (V/N)^(1/3), dimensionless), the convention of CDVAE/DiffCSP.
"""
from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

from core.neighbors import neighbor_list

MIN_DISTANCE_A = 0.5        # Å
MIN_VOLUME_A3 = 0.1         # Å^3
STABILITY_THRESHOLD_EV = 0.1  # eV/atom
RELAX_MATCH_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
SMACT_OXIDATION_STATES = "smact14"


# ---------------------------------------------------------------- validity


def min_interatomic_distance(structure: Structure) -> float:
    """Shortest distance (Å) between two atoms, periodic images and an atom's own images included.

    NaN when the lattice is not finite or degenerate.
    """
    lattice = structure.lattice
    matrix = lattice.matrix
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(structure.frac_coords)) or abs(lattice.volume) < 1e-12:
        return math.nan
    try:
        pairs = neighbor_list(structure)  # shared with the models' input screens
        if pairs.distances.size:
            return float(pairs.distances.min())
    except ValueError:  # a sliver, a huge cell or a collapsed one: no list, and none needed
        pass
    # no two atoms within the list's radius, or no list: the nearest image by brute force
    reduced = lattice.get_lll_reduced_lattice().matrix
    images = np.array([n for n in itertools.product((-1, 0, 1), repeat=3) if any(n)], dtype=float)
    self_image = float(np.min(np.linalg.norm(images @ reduced, axis=1)))
    if len(structure) < 2:
        return self_image
    distances = lattice.get_all_distances(structure.frac_coords, structure.frac_coords)
    np.fill_diagonal(distances, np.inf)
    return float(min(self_image, distances.min()))


def structure_validity(structure: Structure, cutoff: float = MIN_DISTANCE_A) -> bool:
    """All interatomic distances ≥ ``cutoff`` (Å) and volume ≥ 0.1 Å^3 (CDVAE's structure validity)."""
    distance = min_interatomic_distance(structure)
    return bool(math.isfinite(distance) and distance >= cutoff and structure.volume >= MIN_VOLUME_A3)


@functools.lru_cache(maxsize=16384)
def _smact_valid(reduced_formula: str) -> bool:
    from smact.screening import smact_validity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(smact_validity(Composition(reduced_formula), use_pauling_test=True, include_alloys=True,
                                       oxidation_states_set=SMACT_OXIDATION_STATES))
        except (KeyError, ValueError, TypeError, IndexError):
            return False  # an element SMACT has no data for


def composition_validity(composition: Composition | str | Structure) -> bool:
    """SMACT charge neutrality + Pauling electronegativity test (alloys and elements valid)."""
    if isinstance(composition, Structure):
        composition = composition.composition
    composition = Composition(composition).element_composition
    if composition.num_atoms == 0:
        return False
    return _smact_valid(composition.reduced_formula)


# ---------------------------------------------------------------- uniqueness / novelty


def _formula_key(structure: Structure) -> str | None:
    try:
        return structure.composition.element_composition.reduced_formula
    except Exception:  # noqa: BLE001 - an unreadable structure matches nothing
        return None


class StructureSet:
    """Structures bucketed by reduced formula, answering "is an equivalent structure already here?".

    Members may also be added lazily (``add_lazy``: the formula and a loader), so a large reference set
    such as the training data is indexed in well under a second and a structure is only built when a
    query of its formula arrives (most generated formulas meet none).
    """

    def __init__(self, structures: Iterable[Structure] = (), matcher: StructureMatcher | None = None) -> None:
        self.matcher = matcher or StructureMatcher()
        self._buckets: dict[str, list[Structure | Callable[[], Structure]]] = {}
        for structure in structures:
            self.add(structure)

    @classmethod
    def lazy(cls, members: Iterable[tuple[str, Callable[[], Structure]]], matcher: StructureMatcher | None = None):
        """A set of (reduced formula, loader) pairs; each loader runs at most once, when first needed."""
        out = cls(matcher=matcher)
        for formula, load in members:
            out.add_lazy(formula, load)
        return out

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, structure: Structure, key: str | None = None) -> None:
        key = key if key is not None else _formula_key(structure)
        if key is not None:
            self._buckets.setdefault(key, []).append(structure)

    def add_lazy(self, formula: str, load: Callable[[], Structure]) -> None:
        """Add a member known by its formula (any form: keyed by its reduced element formula) and built by ``load()``."""
        try:
            key = Composition(formula).element_composition.reduced_formula
        except Exception:  # noqa: BLE001 - an unreadable formula matches nothing
            return
        self._buckets.setdefault(key, []).append(load)

    def _members(self, key: str) -> Iterator[Structure]:
        bucket = self._buckets.get(key, [])
        for index, member in enumerate(list(bucket)):
            if not isinstance(member, Structure):
                try:
                    member = member()
                except Exception:  # noqa: BLE001 - a reference that cannot be read matches nothing
                    continue
                bucket[index] = member
            yield member

    def contains(self, structure: Structure, key: str | None = None) -> bool:
        """True when a structure of the set matches ``structure`` (StructureMatcher.fit); ``key``: its
        ``_formula_key`` when the caller has it."""
        key = key if key is not None else _formula_key(structure)
        for candidate in self._members(key) if key is not None else ():
            try:
                if self.matcher.fit(structure, candidate):
                    return True
            except Exception:  # noqa: BLE001 - a degenerate structure matches nothing
                continue
        return False


class NoveltyChecker(StructureSet):
    """The training set, for ``is_novel``. Build once and reuse (e.g. across RL steps)."""

    def is_novel(self, structure: Structure) -> bool:
        return not self.contains(structure)


class UniquenessTracker(StructureSet):
    """Streaming uniqueness: ``check_and_add`` is True for the first structure of each kind."""

    def check_and_add(self, structure: Structure) -> bool:
        key = _formula_key(structure)
        if key is None:          # unreadable: matches nothing, so it is new
            return True
        if self.contains(structure, key):
            return False
        self.add(structure, key)
        return True


def unique_flags(structures: Sequence[Structure]) -> list[bool]:
    """True for each structure that matches no earlier one in the list."""
    tracker = UniquenessTracker()
    return [tracker.check_and_add(structure) for structure in structures]


def novelty_flags(structures: Sequence[Structure], training_set: Sequence[Structure] | NoveltyChecker) -> list[bool]:
    """True for each structure that matches no training structure."""
    checker = training_set if isinstance(training_set, NoveltyChecker) else NoveltyChecker(training_set)
    return [checker.is_novel(structure) for structure in structures]


# ---------------------------------------------------------------- relaxation match


@functools.cache
def relax_matcher() -> StructureMatcher:
    return StructureMatcher(**RELAX_MATCH_TOLERANCES)


def relaxation_match(generated: Structure, relaxed: Structure) -> tuple[bool, float | None]:
    """Whether ``relaxed`` still matches ``generated`` and the normalised RMS displacement (None if not)."""
    try:
        rms = relax_matcher().get_rms_dist(generated, relaxed)
    except Exception:  # noqa: BLE001
        return False, None
    if rms is None:
        return False, None
    return True, float(rms[0])


# ---------------------------------------------------------------- rates


def is_stable(e_above_hull: float | None, threshold: float = STABILITY_THRESHOLD_EV) -> bool:
    return e_above_hull is not None and math.isfinite(e_above_hull) and e_above_hull < threshold


def _rate(values: Any) -> float:
    values = [bool(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else math.nan


def _mean(values: Any) -> float:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else math.nan


def summarize(df: Any) -> dict[str, float]:
    """Rates of a scored table (``core.scoring.pipeline.score`` output) as fractions in [0, 1].

    Stability is counted only over *judged* rows: those ``core.scoring.sanity.trusted`` keeps (no
    error, valid structure and composition, not unphysical, not far below the hull, hull covering the
    system) that have an E_hull. ``stability_rate`` = rows that ``sanity.may_call_stable`` / judged
    rows, S.U.N. likewise; ``unjudged_share`` = rows that could not be judged / all rows, so a model
    cannot raise its stability rate by going where the reference is blind. Novelty and S.U.N. are NaN
    when the table has no novelty values (no training set given); match rate and RMSD cover the
    relaxed rows only.
    """
    import pandas as pd

    from core.scoring.sanity import may_call_stable, trusted

    n = len(df)
    column = (lambda name: list(df[name]) if name in df else [None] * n)
    e_hull = column("e_above_hull")
    frame = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
    records = frame.to_dict("records")
    has_hull = [math.isfinite(v) for v in pd.to_numeric(pd.Series(e_hull, dtype=object), errors="coerce").astype(float)]
    judged = [bool(t) and h for t, h in zip(trusted(frame) if n else [], has_hull)]
    stable = [j and may_call_stable(r) for j, r in zip(judged, records)]
    unique = column("unique")
    novel = column("novel")
    has_novelty = any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in novel)
    sun = [s and bool(u) and bool(nv) for s, u, nv in zip(stable, unique, novel)]
    relaxed = [bool(r) for r in column("relaxed")]
    matches = [m for m, r in zip(column("match_relaxed"), relaxed) if r]
    rmsd = [v for v, r in zip(column("rmsd_relaxed"), relaxed) if r]
    errors = column("error")
    valid = [bool(a) and bool(b) for a, b in zip(column("struct_valid"), column("comp_valid"))]
    n_judged = sum(judged)
    return {
        "n_structures": float(n),
        "error_rate": _rate([e is not None and e == e for e in errors]) if n else math.nan,
        "struct_validity": _rate(column("struct_valid")),
        "comp_validity": _rate(column("comp_valid")),
        "validity": _rate(valid),
        "uniqueness": _rate(unique),
        "novelty": _rate(novel) if has_novelty else math.nan,
        "n_judged": float(n_judged),
        "unjudged_share": 1.0 - n_judged / n if n else math.nan,
        "stability_rate": sum(stable) / n_judged if n_judged else math.nan,
        "sun_rate": sum(sun) / n_judged if has_novelty and n_judged else math.nan,
        "mean_e_above_hull": _mean(e_hull),
        "match_rate": _rate(matches),
        "mean_rmsd": _mean(rmsd),
        "mean_fom_ev": _mean(column("fom_ev")),
    }
