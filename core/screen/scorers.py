"""Scorers a screen can use (``ScreenSpec.scorer = "module:factory"``).

A scorer factory takes the ``ScreenSpec`` and returns an object with
``score(items) -> list[dict]``: one row per item, in order, where an item is a pymatgen Structure or
an Exception (a sample that could not be built; its row should carry the message in ``error``).
Factories are called once per worker, so they load their models once.
"""
from __future__ import annotations

from typing import Any, Sequence

from core.screen.spec import ScreenSpec


class PipelineScorer:
    """The default scorer: ``core.scoring.pipeline.score`` with the MLIP, hull and novelty set loaded once."""

    def __init__(self, spec: ScreenSpec) -> None:
        from core.scoring.hull import load_hull_reference
        from core.scoring.mlip import load_mlip
        from core.scoring.pipeline import load_property_models
        from core.scoring.references.training import novelty_reference

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
