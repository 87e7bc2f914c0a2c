"""The work of a screen, identical in a Ray actor and in this process: sample a batch, then score it.

``Sampler`` holds the checkpoint (loaded once) and turns a ``Batch`` into a ``SampledBatch``;
``Scorer`` holds the scoring models (loaded once, through the spec's scorer hook) and turns a
``SampledBatch`` into the batch's table. Ray runs both as actors (``core.screen.executors``);
``--no-ray`` calls the very same methods here.

A failure while loading is kept and raised by ``ready()`` (and by every later call), so it reaches
the driver as the project's typed error (e.g. a missing model file) instead of a dead actor.
"""
from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from core.errors import InvalidInputError, ScoringError
from core.screen.spec import Batch, ScreenSpec

# columns every screen row has besides the scorer's (units: logp in nats)
SAMPLE_COLUMNS = ("sample_id", "batch", "generated_spacegroup", "token_string", "logp", "logp_w", "logp_a",
                  "logp_xyz", "logp_l", "build_error")
STRUCTURE_COLUMN = "structure_json"   # the generated crystal, pymatgen JSON (None when it could not be built)
WORKER_COLUMN = "worker"              # "host:pid" of the process that scored the row


def enable_compilation_cache() -> None:
    """Keep compiled samplers on disk (``settings.cache_dir()/jax``) so a new or restarted worker skips compiling."""
    import jax

    from core import settings

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(settings.cache_dir() / "jax"))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def resolve_factory(name: str) -> Callable[[ScreenSpec], Any]:
    """The scorer factory named ``"module:attribute"``."""
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"scorer {name!r} cannot be imported ({exc})") from None


@dataclass
class SampledBatch:
    """A batch's samples: table fields per crystal, and what the scorer gets (Structure or the build error)."""

    batch: Batch
    rows: list[dict[str, Any]]
    items: list[Any]


class _Loaded:
    """Loads in ``__init__`` but keeps the exception, re-raised by ``ready()`` and each call."""

    _error: BaseException | None = None

    def _load(self, load: Callable[[], None]) -> None:
        try:
            load()
        except Exception as exc:  # noqa: BLE001 - reported through ready()
            self._error = exc

    def ready(self) -> str:
        """Raise the loading error, if any; else the worker id ("host:pid")."""
        if self._error is not None:
            raise self._error
        return worker_id()


class Sampler(_Loaded):
    """Holds a CrystalFormer checkpoint; ``sample(batch)`` draws the batch's crystals."""

    def __init__(self, spec: ScreenSpec) -> None:
        self.spec = spec
        self._load(self._load_model)

    def _load_model(self) -> None:
        from core.checkpoint import load_checkpoint
        from core.sampler import element_mask

        enable_compilation_cache()
        self.checkpoint = load_checkpoint(self.spec.checkpoint, self.spec.config)
        self.mask = element_mask(self.checkpoint.config, self.spec.elements or None, self.spec.exclude or None)

    def sample(self, batch: Batch) -> SampledBatch:
        import numpy as np

        from core.sampler import sample_arrays, samples_from_arrays

        self.ready()
        arrays = sample_arrays(self.checkpoint, np.asarray(batch.spacegroups, np.int32), temperature=self.spec.temperature,
                               top_p=self.spec.top_p, atom_mask=self.mask, seed=batch.seed, batch_size=self.spec.batch_size)
        rows, items = [], []
        for offset, s in enumerate(samples_from_arrays(arrays)):
            try:
                string = s.string
            except Exception:  # noqa: BLE001 - a token row that cannot be written keeps its other fields
                string = None
            rows.append({"sample_id": batch.first + offset, "batch": batch.id, "generated_spacegroup": int(s.spacegroup),
                         "token_string": string, "logp": float(s.logp),
                         **{f"logp_{k}": float(v) for k, v in s.logp_parts.items()}, "build_error": s.error})
            items.append(s.structure if s.structure is not None else InvalidInputError(f"not built: {s.error}"))
        return SampledBatch(batch, rows, items)


class Scorer(_Loaded):
    """Holds the scoring models (``spec.scorer`` hook); ``score(sampled)`` returns the batch's table."""

    def __init__(self, spec: ScreenSpec) -> None:
        self.spec = spec
        self._load(lambda: setattr(self, "scorer", resolve_factory(spec.scorer)(spec)))

    def score(self, sampled: SampledBatch) -> pd.DataFrame:
        from pymatgen.core import Structure

        self.ready()
        scored = list(self.scorer.score(sampled.items))
        if len(scored) != len(sampled.items):
            raise ScoringError(f"scorer {self.spec.scorer} returned {len(scored)} rows for {len(sampled.items)} structures")
        me = worker_id()
        records = [{**meta, **row, STRUCTURE_COLUMN: item.to_json() if isinstance(item, Structure) else None,
                    WORKER_COLUMN: me}
                   for meta, item, row in zip(sampled.rows, sampled.items, scored)]
        return pd.DataFrame.from_records(records)
