"""What a screen computes: its parameters (``ScreenSpec``) and the deterministic batches they imply.

The plan is a pure function of the spec (and the checkpoint's training space-group distribution for
``"train"``): the space group of every sample is drawn once with ``core.sampler.resolve_spacegroups``
from ``seed``, sorted so that each batch holds one or a few space groups, and cut into batches of
``batch_size``. Batch ``i`` samples with its own seed derived from ``(seed, i)``, so any batch can be
recomputed alone, by any worker, in any order, with the same result. Sample ``k`` of the screen
(``sample_id``) is row ``k - batch.first`` of its batch.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInputError
from core.scoring.mlip import DEFAULT_MLIP

DEFAULT_SCORER = "core.screen.scorers:PipelineScorer"
TRAIN = "train"


@dataclass(frozen=True)
class ScreenSpec:
    """Everything that decides a screen's rows. Two runs with equal specs write identical batches.

    Attributes:
        checkpoint: CrystalFormer checkpoint folder (ours) or official ``.pkl`` / folder.
        spacegroups: "1-230", "225,221", "225" or "train" (the checkpoint's training distribution).
        num: number of crystals to sample.
        batch_size: crystals per batch (the unit of work, of retries and of resuming).
        seed: seed of the space-group draw and of every batch's sampling.
        temperature, top_p, elements, exclude: sampling settings (``core.sampler.sample``).
        config: model config JSON for official checkpoints (None: the paper's).
        mlip, relax, hull, properties: scoring settings (``core.scoring.pipeline.score``).
        novelty: "training" (the project's offline training structures), "none", or a structure file.
        scorer: ``"module:factory"``; ``factory(spec)`` returns an object whose
            ``score(items) -> list[dict]`` gives one row per item (a Structure, or an Exception for a
            sample that could not be built). The default wraps the scoring pipeline; tests inject a
            fast fake here.
    """

    checkpoint: str
    spacegroups: str = "1-230"
    num: int = 1000
    batch_size: int = 64
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    elements: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    config: str | None = None
    mlip: str = DEFAULT_MLIP
    relax: bool = False
    hull: str = "bundled"
    properties: bool = True
    novelty: str = "training"
    scorer: str = DEFAULT_SCORER

    def normalized(self) -> "ScreenSpec":
        """Checked copy with canonical values (absolute paths, space groups as ranges); raises InvalidInputError."""
        from core.tokens import atomic_number

        if int(self.num) < 1:
            raise InvalidInputError(f"--num must be at least 1, got {self.num}")
        if int(self.batch_size) < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if ":" not in self.scorer:
            raise InvalidInputError(f"scorer {self.scorer!r} must read 'module:factory'")
        for symbol in (*self.elements, *self.exclude):
            atomic_number(symbol)
        novelty, hull = self.novelty, self.hull
        if novelty not in ("training", "none"):
            novelty = str(Path(novelty).expanduser().resolve())
        if Path(hull).expanduser().exists():   # an entries file, not "bundled" / "mp-api" / "none"
            hull = str(Path(hull).expanduser().resolve())
        return dataclasses.replace(
            self, checkpoint=str(Path(self.checkpoint).expanduser().resolve()), spacegroups=canonical_spacegroups(self.spacegroups),
            num=int(self.num), batch_size=int(self.batch_size), seed=int(self.seed), temperature=float(self.temperature),
            top_p=float(self.top_p), elements=tuple(self.elements), exclude=tuple(self.exclude),
            config=str(Path(self.config).expanduser().resolve()) if self.config else None, novelty=novelty, hull=hull)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScreenSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Batch:
    """One unit of work: sample ``len(spacegroups)`` crystals with ``seed``, then score them."""

    id: int
    first: int                       # sample_id of its first crystal
    seed: int
    spacegroups: tuple[int, ...]


def canonical_spacegroups(text: str) -> str:
    """'1 - 230' -> '1-230', '225, 221' -> '225,221', 'Train' -> 'train' (order kept: it decides the cycle)."""
    from core.sampler import parse_spacegroups

    if str(text).strip().lower() in ("train", "training"):
        return TRAIN
    groups = parse_spacegroups(str(text))
    runs: list[list[int]] = []
    for g in groups:
        if runs and g == runs[-1][1] + 1:
            runs[-1][1] = g
        else:
            runs.append([g, g])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def batch_seed(seed: int, batch_id: int) -> int:
    """Seed of one batch's sampling, independent of every other batch (NumPy SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(batch_id)]).generate_state(1)[0])


def plan(spec: ScreenSpec, distribution: dict[int, float] | None = None) -> list[Batch]:
    """The screen's batches, in order. ``distribution``: the checkpoint's {space group: probability} for "train"."""
    from core.sampler import resolve_spacegroups

    groups = resolve_spacegroups(spec.spacegroups, spec.num, np.random.default_rng(spec.seed), distribution)
    groups = np.sort(np.asarray(groups, int), kind="stable")
    size = spec.batch_size
    return [Batch(i, start, batch_seed(spec.seed, i), tuple(int(g) for g in groups[start:start + size]))
            for i, start in enumerate(range(0, spec.num, size))]


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 over a checkpoint's files (config, parameters, pickles), so a changed model is noticed on resume."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir()
                                                  if p.is_file() and p.suffix in (".json", ".npz", ".pkl") and p.name != "meta.json")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
