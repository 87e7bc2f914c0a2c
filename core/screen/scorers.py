"""Scorers a screen can use (``ScreenSpec.scorer = "module:factory"``).

A scorer factory takes the ``ScreenSpec`` and returns an object with
``score(items) -> list[dict]``: one row per item, in order, where an item is a pymatgen Structure or
an Exception (a sample that could not be built; its row should carry the message in ``error``).
Factories are called once per worker, so they load their models once.
"""
from __future__ import annotations

from typing import Any, Sequence

from core.screen.spec import ScreenSpec


def novelty_reference(kind: str) -> Any:
    """A ``NoveltyChecker`` for ``kind``: "training" (the project's offline training structures:
    matbench_dielectric + the MP hull entry sets, see ``core.data``), a structure file, or None for "none"."""
    if kind == "none":
        return None
    from core import data
    from core.scoring.metrics import NoveltyChecker

    if kind == "training":   # indexed by formula; a structure is built only when a query of its formula comes
        return NoveltyChecker.lazy(data.training_structure_sources())
    return NoveltyChecker(_sane_reference(data.read_structures([kind]), kind))


def _sane_reference(structures: Sequence[Any], source: str) -> list[Any]:
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


class PipelineScorer:
    """The default scorer: ``core.scoring.pipeline.score`` with the MLIP, hull and novelty set loaded once."""

    def __init__(self, spec: ScreenSpec) -> None:
        from core.scoring.hull import load_hull_reference
        from core.scoring.mlip import load_mlip
        from core.scoring.pipeline import load_property_models

        self.spec = spec
        self.mlip = load_mlip(spec.mlip)
        self.hull = None if spec.hull == "none" else load_hull_reference(spec.hull, self.mlip)
        if spec.properties:
            load_property_models()  # fail now, with the model's own message, rather than in every row
        self.novelty = novelty_reference(spec.novelty)

    def score(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        from core.scoring.pipeline import score

        frame = score(list(items), mlip=self.mlip, relax=self.spec.relax, hull=self.hull, properties=self.spec.properties,
                      training_set=self.novelty)
        return frame.to_dict("records")
