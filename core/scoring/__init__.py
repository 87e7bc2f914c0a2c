"""Scoring engine: structures made by the model are judged here.

``score(structures)`` -> one table row per structure (MLIP energy, E_hull, band gap, ε_elec, FoM,
validity, uniqueness, novelty). The names below are re-exported lazily, so ``import core.scoring``
stays cheap until a model is needed.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "score": "core.scoring.pipeline",
    "score_iter": "core.scoring.pipeline",
    "input_problem": "core.scoring.inputs",
    "COLUMNS": "core.scoring.pipeline",
    "load_hull_reference": "core.scoring.hull",
    "HullReference": "core.scoring.hull",
    "HullResult": "core.scoring.hull",
    "figure_of_merit": "core.scoring.fom",
    "structure_validity": "core.scoring.metrics",
    "composition_validity": "core.scoring.metrics",
    "unique_flags": "core.scoring.metrics",
    "novelty_flags": "core.scoring.metrics",
    "NoveltyChecker": "core.scoring.metrics",
    "relaxation_match": "core.scoring.metrics",
    "summarize": "core.scoring.metrics",
    "STABILITY_THRESHOLD_EV": "core.scoring.metrics",
    "load_mlip": "core.scoring.mlip",
    "MLIP_NAMES": "core.scoring.mlip",
    "DEFAULT_MLIP": "core.scoring.mlip",
    "load_bandgap_model": "core.scoring.backends.bandgap",
    "load_dielectric_model": "core.scoring.dielectric",
    "default_workers": "core.scoring.workers",
    "close_workers": "core.scoring.workers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'core.scoring' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
