"""Crystal data sets for training: reading structures, tokenising them, saving token arrays.

Readers accept pymatgen Structures, CIF files or folders, extxyz, CSV with a ``cif`` (or ``structure``)
column, pymatgen JSON, and the offline sets this project trains on:

* ``matbench_dielectric``: the 4,764 Materials Project structures that ship inside the crystal-toolkit
  wheel (``crystal_toolkit/apps/examples/matbench_dielectric.json.gz``);
* ``hulls``: the structures of the Materials Project convex-hull entry sets in ``$CFRL_DATA_DIR/hulls``.

A token set is a dict of arrays (G, L, XYZ, A, W) as ``core.tokens.stack`` returns, saved as ``.npz``.
Structures with ``n_max`` or more symmetry-inequivalent sites cannot be represented and are skipped
(and counted).
"""
from __future__ import annotations

import functools
import gzip
import json
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from pymatgen.core import Composition, Structure

from core import settings
from core.errors import InvalidInputError, MissingResourceError
from core.tokens import DEFAULT_N_MAX, CrystalTokens

ARRAY_KEYS = ("G", "L", "XYZ", "A", "W")


# ---------------------------------------------------------------------------------------------
# Sources of structures
# ---------------------------------------------------------------------------------------------
def load_matbench_dielectric() -> tuple[list[Structure], np.ndarray]:
    """The 4,764 matbench_dielectric structures in the file's (matbench) order, and their refractive index n."""
    from core.scoring.references.matbench import load_matbench_dielectric as table

    return table().structures_and_n()


def _hull_structure_dicts() -> list[dict]:
    """The ``structure`` dicts of the Materials Project entries (``Kind A`` files) in ``$CFRL_DATA_DIR/hulls``,
    each with its entry's ``composition`` when the file gives one."""
    folder = settings.require(settings.data_dir() / "hulls", "hull reference entries folder",
                              "Set CFRL_DATA_DIR to the folder holding hulls/*.json.gz (default ../shared/data).")
    out = []
    for path in sorted(folder.glob("*.json.gz")):
        with gzip.open(path, "rt") as fh:
            entries = json.load(fh)
        out += [e for e in entries if isinstance(e, dict) and "structure" in e]
    return out


def load_hull_structures() -> list[Structure]:
    """Structures of the Materials Project entry sets (``Kind A`` files) in ``$CFRL_DATA_DIR/hulls``."""
    return [Structure.from_dict(e["structure"]) for e in _hull_structure_dicts()]


def training_structure_sources() -> list[tuple[str, Callable[[], Structure]]]:
    """(formula, loader) for every training structure of ``load_matbench_dielectric`` and
    ``load_hull_structures``, without building the structures (for a lazily filled novelty reference)."""
    from core.scoring.references.matbench import load_matbench_dielectric as table

    matbench = table()
    formulas = matbench.column("formula")
    out: list[tuple[str, Callable[[], Structure]]] = [
        (str(formulas[row]), functools.partial(matbench.structure, row)) for row in matbench.rows]
    for entry in _hull_structure_dicts():
        load = functools.partial(Structure.from_dict, entry["structure"])
        out.append((Composition(entry["composition"]).formula if "composition" in entry else load().formula, load))
    return out


def read_structures(paths: Iterable[str | Path]) -> list[Structure]:
    """Structures from CIF files/folders, extxyz, CSV (``cif``/``structure`` column) or pymatgen JSON."""
    out: list[Structure] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += read_structures(sorted(q for q in p.iterdir() if q.suffix.lower() in (".cif", ".json", ".extxyz", ".xyz", ".csv")))
            continue
        if not p.exists():
            raise MissingResourceError(f"input file {p} not found")
        suffix = "".join(p.suffixes).lower()
        try:
            if suffix.endswith(".csv"):
                import pandas as pd

                df = pd.read_csv(p)
                column = "cif" if "cif" in df else "structure" if "structure" in df else None
                if column is None:
                    raise InvalidInputError(f"{p}: CSV needs a 'cif' or 'structure' column")
                for text in df[column]:
                    text = str(text)
                    out.append(Structure.from_str(text, fmt="cif") if "_cell_length_a" in text
                               else Structure.from_dict(json.loads(text.replace("'", '"'))))
            elif suffix.endswith((".extxyz", ".xyz")):
                from ase.io import read
                from pymatgen.io.ase import AseAtomsAdaptor

                out += [AseAtomsAdaptor.get_structure(a) for a in read(p, index=":")]
            elif suffix.endswith(".json") or suffix.endswith(".json.gz"):
                opener = gzip.open if suffix.endswith(".gz") else open
                with opener(p, "rt") as fh:
                    data = json.load(fh)
                items = data if isinstance(data, list) else [data]
                out += [Structure.from_dict(d.get("structure", d)) for d in items]
            else:
                out.append(Structure.from_file(p))
        except (InvalidInputError, MissingResourceError):
            raise
        except Exception as exc:
            raise InvalidInputError(f"cannot read structures from {p}: {type(exc).__name__}: {exc}") from None
    return out


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
    structures = load_matbench_dielectric()[0] + load_hull_structures()
    tokens = tokenize(structures, n_max, progress=progress)
    if cache:
        tokens.save(path)
    return tokens
