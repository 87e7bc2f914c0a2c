"""Crystal data sets for training: tokenising structures, saving token arrays.

Structures come from files (``core.export.read_paths``: CIF files or folders, extxyz, CSV with a ``cif``
(or ``structure``) column, pymatgen JSON) or from the offline sets this project trains on
(``core.scoring.references.training``: matbench_dielectric and the MP hull entry sets).

A token set is a dict of arrays (G, L, XYZ, A, W) as ``core.tokens.stack`` returns, saved as ``.npz``.
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

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.arrays, skipped=json.dumps(self.skipped))

    @classmethod
    def load(cls, path: str | Path) -> "TokenSet":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ARRAY_KEYS}
            skipped = json.loads(str(z["skipped"])) if "skipped" in z.files else {}
        return cls(arrays, skipped)

    def spacegroup_distribution(self) -> dict[int, float]:
        groups, counts = np.unique(self.arrays["G"], return_counts=True)
        return {int(g): float(c / counts.sum()) for g, c in zip(groups, counts)}


def _tokenize_one(args):
    structure, n_max = args
    try:
        tokens = CrystalTokens.from_structure(structure)
        if tokens.num_sites >= n_max:
            return None, f"more than {n_max - 1} inequivalent sites"
        return tokens.to_arrays(n_max), None
    except InvalidInputError as exc:
        return None, str(exc).split(" (")[0]
    except Exception as exc:  # pragma: no cover - unexpected library failures are counted, not fatal
        return None, type(exc).__name__


def tokenize(structures: list[Structure], n_max: int = DEFAULT_N_MAX, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> TokenSet:
    """Tokenise structures (in parallel processes); unrepresentable ones are skipped and counted."""
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(s, n_max) for s in structures]
    rows, skipped = [], {}
    if workers > 1 and len(jobs) > 50:
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_tokenize_one, jobs, chunksize=16)
            for i, (row, reason) in enumerate(results, 1):
                rows.append(row) if row is not None else skipped.__setitem__(reason, skipped.get(reason, 0) + 1)
                if progress and i % 100 == 0:
                    progress(i, len(jobs))
    else:
        for i, job in enumerate(jobs, 1):
            row, reason = _tokenize_one(job)
            rows.append(row) if row is not None else skipped.__setitem__(reason, skipped.get(reason, 0) + 1)
            if progress and i % 100 == 0:
                progress(i, len(jobs))
    if not rows:
        raise InvalidInputError(f"no structure could be tokenised (skipped: {skipped})")
    return TokenSet({k: np.stack([r[k] for r in rows]) for k in ARRAY_KEYS}, skipped)


def split(tokens: TokenSet, val_fraction: float = 0.1, seed: int = 0) -> tuple[TokenSet, TokenSet]:
    """Random train/validation split (fixed seed)."""
    n = len(tokens)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
    return tokens.subset(np.sort(order[n_val:])), tokens.subset(np.sort(order[:n_val]))


def base_training_set(n_max: int = DEFAULT_N_MAX, cache: bool = True,
                      progress: Callable[[int, int], None] | None = None) -> TokenSet:
    """Tokens of the offline training data: matbench_dielectric + the MP hull structures (cached)."""
    path = settings.cache_dir() / f"base_training_set_nmax{n_max}.npz"
    if cache and path.exists():
        return TokenSet.load(path)
    from core.scoring.references.training import load_hull_structures, load_matbench_dielectric

    structures = load_matbench_dielectric()[0] + load_hull_structures()
    tokens = tokenize(structures, n_max, progress=progress)
    if cache:
        tokens.save(path)
    return tokens
