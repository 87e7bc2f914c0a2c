"""Crystal data sets for training: tokenising structures, saving token arrays.

Structures come from files (``core.export.read_paths``: CIF files or folders, extxyz, CSV with a ``cif``
(or ``structure``) column, pymatgen JSON) or from the offline sets this project trains on
(``core.scoring.references.training``: matbench_dielectric and the MP hull entry sets).

A token set is a dict of arrays (G, L, XYZ, A, W) as ``core.tokens.stack`` returns, saved as ``.npz``.
With ``equivalents`` > 1 each crystal is also described in its other equivalent Wyckoff settings
(``CrystalTokens.equivalents``) and the array ``crystal`` says which crystal a row describes (its first row
is the canonical description, the one ``equivalents=1`` gives).
Structures with ``n_max`` or more symmetry-inequivalent sites cannot be represented and are skipped
(and counted).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from pymatgen.core import Structure

from core import settings
from core.errors import InvalidInputError
from core.tokens import DEFAULT_N_MAX, CrystalTokens

ARRAY_KEYS = ("G", "L", "XYZ", "A", "W")


# ---------------------------------------------------------------------------------------------
# Tokenising
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenSet:
    """Token arrays of a data set, plus what was skipped and why."""

    arrays: dict[str, np.ndarray]
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count

    def __len__(self) -> int:
        return len(self.arrays["G"])

    def subset(self, index) -> "TokenSet":
        return TokenSet({k: v[index] for k, v in self.arrays.items()})

    @property
    def crystals(self) -> np.ndarray:
        """Crystal index of each row (rows of one crystal are equivalent descriptions of it)."""
        return self.arrays["crystal"] if "crystal" in self.arrays else np.arange(len(self))

    def canonical(self) -> "TokenSet":
        """The first (canonical) description of every crystal."""
        c = self.crystals
        first = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        return TokenSet({k: v[first] for k, v in self.arrays.items() if k in ARRAY_KEYS}, self.skipped)

    def one_per_crystal(self, rng: np.random.Generator) -> "TokenSet":
        """One randomly chosen description of every crystal (an epoch of augmented training)."""
        c = self.crystals
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        counts = np.diff(np.r_[starts, len(c)])
        pick = starts + (rng.random(len(starts)) * counts).astype(int)
        return TokenSet({k: v[pick] for k, v in self.arrays.items() if k in ARRAY_KEYS})

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.arrays, skipped=json.dumps(self.skipped))

    @classmethod
    def load(cls, path: str | Path) -> "TokenSet":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in (*ARRAY_KEYS, "crystal") if k in z.files}
            skipped = json.loads(str(z["skipped"])) if "skipped" in z.files else {}
        return cls(arrays, skipped)

    def spacegroup_distribution(self) -> dict[int, float]:
        groups, counts = np.unique(self.arrays["G"], return_counts=True)
        return {int(g): float(c / counts.sum()) for g, c in zip(groups, counts)}


def _tokenize_one(args):
    structure, n_max, equivalents = args
    try:
        if equivalents > 1:
            descriptions = CrystalTokens.equivalents(structure, limit=equivalents)
        else:
            descriptions = [CrystalTokens.from_structure(structure)]
        if descriptions[0].num_sites >= n_max:
            return None, f"more than {n_max - 1} inequivalent sites"
        return [t.to_arrays(n_max) for t in descriptions], None
    except InvalidInputError as exc:
        return None, str(exc).split(" (")[0]
    except Exception as exc:  # pragma: no cover - unexpected library failures are counted, not fatal
        return None, type(exc).__name__


def tokenize(structures: list[Structure], n_max: int = DEFAULT_N_MAX, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None, equivalents: int = 1) -> TokenSet:
    """Tokenise structures (in parallel processes); unrepresentable ones are skipped and counted.

    ``equivalents`` > 1: up to that many equivalent descriptions per crystal, canonical first, with the
    array ``crystal`` (see the module docstring); the canonical rows are those of ``equivalents=1``.
    """
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(s, n_max, equivalents) for s in structures]
    crystals: list[list[dict]] = []
    skipped: dict[str, int] = {}

    def take(i: int, rows, reason) -> None:
        if rows is not None:
            crystals.append(rows)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
        if progress and i % 100 == 0:
            progress(i, len(jobs))

    if workers > 1 and len(jobs) > 50:
        with mp.get_context("fork").Pool(workers) as pool:
            for i, (rows, reason) in enumerate(pool.imap(_tokenize_one, jobs, chunksize=16), 1):
                take(i, rows, reason)
    else:
        for i, job in enumerate(jobs, 1):
            take(i, *_tokenize_one(job))
    if not crystals:
        raise InvalidInputError(f"no structure could be tokenised (skipped: {skipped})")
    rows = [row for group in crystals for row in group]
    arrays = {k: np.stack([r[k] for r in rows]) for k in ARRAY_KEYS}
    if equivalents > 1:
        arrays["crystal"] = np.repeat(np.arange(len(crystals)), [len(g) for g in crystals]).astype(np.int32)
    return TokenSet(arrays, skipped)


def split(tokens: TokenSet, val_fraction: float = 0.1, seed: int = 0) -> tuple[TokenSet, TokenSet]:
    """Random train/validation split of the crystals (fixed seed); all descriptions of a crystal go to the
    same side, and the canonical rows are split exactly as a set without equivalents is."""
    crystals = tokens.crystals
    n = int(crystals.max()) + 1 if len(crystals) else 0
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
    is_val = np.zeros(n, bool)
    is_val[order[:n_val]] = True
    return tokens.subset(np.flatnonzero(~is_val[crystals])), tokens.subset(np.flatnonzero(is_val[crystals]))


def base_training_set(n_max: int = DEFAULT_N_MAX, cache: bool = True,
                      progress: Callable[[int, int], None] | None = None, equivalents: int = 1) -> TokenSet:
    """Tokens of the offline training data: matbench_dielectric + the MP hull structures (cached);
    ``equivalents`` as in ``tokenize`` (the augmented set takes ~10 min on 2 cores the first time)."""
    suffix = f"_eq{equivalents}" if equivalents > 1 else ""
    path = settings.cache_dir() / f"base_training_set_nmax{n_max}{suffix}.npz"
    if cache and path.exists():
        return TokenSet.load(path)
    from core.scoring.references.training import load_hull_structures, load_matbench_dielectric

    structures = load_matbench_dielectric()[0] + load_hull_structures()
    tokens = tokenize(structures, n_max, progress=progress, equivalents=equivalents)
    if cache:
        tokens.save(path)
    return tokens
