"""Batched predictions of a matgl property model (MEGNet / M3GNet / TensorNet regressor), one value per structure.

Loaded through ``legacy_matgl.load_matgl`` (so published checkpoints give their published numbers);
``predict`` screens each structure like the MLIPs do, merges the good ones into PyG batches and
returns a float (the model's unit, after its target transformer) or the exception of that structure.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from pymatgen.core import Structure

from core.errors import ScoringError
from core.scoring.backends.matgl_graphs import graph_batch
from core.scoring.backends.legacy_matgl import load_matgl
from core.scoring.inputs import DEFAULT_LIMITS
from core.scoring.mlip import check_structure, predict_in_batches


DEFAULT_STATE = (0.0, 0.0)  # the graph state matgl's converter gives a structure


class MatglPropertyModel:
    """A matgl property model with batched, per-item-safe ``predict``.

    Args:
        path_or_name: checkpoint folder or name under ``models_dir()/"matgl"``.
        device: torch device (default: ``pick_torch_device()``).
        state: graph state for every structure, e.g. the fidelity index of a multi-fidelity MEGNet
            (``0`` = PBE); ``None`` uses the converter's default state.
        label: human name (default: the folder name).
        batch_size: structures per model call.
    """

    def __init__(self, path_or_name: str | Path, device: str | None = None, state: int | Sequence[float] | None = None,
                 label: str | None = None, batch_size: int = 64, convention: str = "auto") -> None:
        self.model = load_matgl(path_or_name, device=device, convention=convention)
        self.device = str(next(self.model.parameters()).device)
        self.label = label or Path(self.model.matgl_path).name
        self.batch_size = batch_size
        self.limits = DEFAULT_LIMITS
        inner = getattr(self.model, "model", self.model)  # TransformedTargetModel wraps the network
        self.elements = frozenset(inner.element_types)
        self.cutoff_a = float(inner.cutoff)
        self._state = state
        self._categorical_state = bool(getattr(getattr(inner, "embedding", None), "ntypes_state", None))
        self._element_types = tuple(inner.element_types)

    def check(self, structure: Structure) -> None:
        """Raise ScoringError if this model cannot evaluate ``structure``."""
        check_structure(structure, label=self.label, elements=self.elements, cutoff_a=self.cutoff_a, limits=self.limits)

    def predict(self, structures: Sequence[Structure]) -> list[float | Exception]:
        """One value per structure (model units) or the exception that structure raised."""
        def run(batch: list[Structure]) -> list[float | Exception]:
            return [v if math.isfinite(v) else ScoringError(f"{self.label} returned a non-finite value")
                    for v in self._predict_batch(batch)]

        return predict_in_batches(structures, self.check, run, self.label, self.batch_size)

    def _predict_batch(self, structures: list[Structure]) -> list[float]:
        batch, _ = graph_batch(structures, self._element_types, self.cutoff_a, with_positions=True)
        batch = batch.to(self.device)
        states = [DEFAULT_STATE if self._state is None else self._state] * len(structures)
        if self._categorical_state:
            state = torch.tensor([int(torch.as_tensor(s).reshape(-1)[0]) for s in states], dtype=torch.long)
        else:
            state = torch.stack([torch.as_tensor(s, dtype=torch.float32).reshape(-1) for s in states])
        with torch.no_grad():
            out = self.model(g=batch, state_attr=state.to(self.device))
        return out.detach().reshape(-1).cpu().double().tolist()
