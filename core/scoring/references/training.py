"""The project's offline training structures, and the novelty reference built from them.

* ``matbench_dielectric``: the 4,764 Materials Project structures that ship inside the crystal-toolkit
  wheel (``core.scoring.references.matbench``), with their refractive index n;
* ``hulls``: the structures of the Materials Project convex-hull entry sets in ``$CFRL_DATA_DIR/hulls``.

Training (``core.data.base_training_set``), the dielectric model's fit and the novelty judgement of the
score table all read them from here, so "novel" means "not in what the model was trained on".
"""
from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from pymatgen.core import Composition, Structure

from core import settings


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


def novelty_reference(kind: str) -> Any:
    """A ``NoveltyChecker`` for ``kind``: "training" (the training structures above), a structure file,
    or None for "none"."""
    if kind == "none":
        return None
    from core.export import read_paths
    from core.scoring.metrics import NoveltyChecker

    if kind == "training":   # indexed by formula; a structure is built only when a query of its formula comes
        return NoveltyChecker.lazy(training_structure_sources())
    return NoveltyChecker(_sane_reference(read_paths([kind]), kind))


def _sane_reference(structures: list[Any], source: str) -> list[Any]:
    """The structures of a reference file that pass ``core.structure_check``; the others are named in a
    warning (a broken reference structure must not reach the structure matcher)."""
    import warnings

    from core.errors import InvalidInputError
    from core.structure_check import structure_problem

    problems = [(k, structure_problem(s)) for k, s in enumerate(structures)]
    bad = [f"#{k + 1}: {p}" for k, p in problems if p is not None]
    if bad and len(bad) == len(structures):
        raise InvalidInputError(f"novelty reference {source}: no usable structure ({'; '.join(bad[:3])})")
    if bad:
        warnings.warn(f"novelty reference {source}: skipped {len(bad)} structure(s): {'; '.join(bad[:3])}", stacklevel=2)
    return [s for (k, p), s in zip(problems, structures) if p is None]
