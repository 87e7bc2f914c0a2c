"""What the Generate and Compare pages ask the sampler for, and how samples are tabulated."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from app.runtime import warm_up_enabled
from core.errors import InvalidInputError

MAX_SAMPLES = 1000


@dataclass(frozen=True)
class GenerateRequest:
    """Sampling settings: space group (1–230 or "train"), count, temperature, element allow/deny lists, seed,
    and overlap-aware sampling (on: crystals with overlapping atoms are drawn again, ``core.sampler.sample``)."""

    spacegroup: int | str = 225
    num: int = 100
    temperature: float = 1.0
    elements: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    reject_overlaps: bool = True

    def check(self) -> None:
        """Raise InvalidInputError for requests the sampler cannot honour, naming the fix."""
        if not 1 <= int(self.num) <= MAX_SAMPLES:
            raise InvalidInputError(f"number of samples must be between 1 and {MAX_SAMPLES}, got {self.num}")
        if not self.temperature > 0:
            raise InvalidInputError(f"temperature must be positive, got {self.temperature}")
        both = sorted(set(self.elements) & set(self.exclude))
        if both:
            raise InvalidInputError(f"{', '.join(both)} both allowed and excluded: remove them from one of the lists")

    def describe(self) -> str:
        from core.wyckoff import spacegroup_label

        where = "space groups from the training distribution" if self.spacegroup == "train" else spacegroup_label(int(self.spacegroup))
        parts = [f"{self.num} samples in {where}", f"T = {self.temperature:g}", f"seed {self.seed}"]
        if self.elements:
            parts.append("only " + " ".join(self.elements))
        if self.exclude:
            parts.append("no " + " ".join(self.exclude))
        if self.reject_overlaps:
            parts.append("overlaps redrawn")
        return ", ".join(parts)


def generate(checkpoint, request: GenerateRequest, progress: Callable[[int, int], None] | None = None) -> list:
    """``core.sampler.sample`` with the request's settings (raises the core's typed errors)."""
    from core.sampler import sample

    request.check()
    return sample(checkpoint, spacegroup=request.spacegroup, num=int(request.num), temperature=float(request.temperature),
                  elements=list(request.elements) or None, exclude=list(request.exclude) or None,
                  seed=int(request.seed), progress=progress, reject_overlaps=bool(request.reject_overlaps))


def sample_into(pool, checkpoint, request: GenerateRequest, job=None, run: str | None = None) -> list[int]:
    """Sample into a new named run of ``pool`` (earlier runs are kept); returns the new ids.

    ``run``: the run's name (default '<n>. <model>'); its settings say model, request and time.
    """
    from app.pool import GENERATED

    if job is not None:
        job.report(0, request.num, f"sampling with {checkpoint.name} (the first batch of a new size includes "
                                   "compiling the sampler: up to a minute on a CPU)")
    t0 = time.time()
    samples = generate(checkpoint, request, progress=(lambda d, t: job.report(d, t, "sampling")) if job is not None else None)
    from core.sampler import acceptance

    made = pool.new_run(GENERATED, model=checkpoint.name, settings=request.describe(), name=run)
    ids = pool.add_samples(samples, source=checkpoint.name, run=made.name)
    pool.generation = {"checkpoint": checkpoint.name, "request": request, "seconds": time.time() - t0, "run": made.name,
                       "acceptance": acceptance(samples)}
    return ids


_WARMED: set[int] = set()
_WARMED_LOCK = threading.Lock()


def warm_up(checkpoint) -> threading.Thread | None:
    """Compile the sampler for the default request (``core.sampler.precompile``) and draw it once
    (``GenerateRequest()``: 100 samples in Fm-3m) from ``checkpoint`` in the background, once per checkpoint
    and process, so the first Generate click finds it compiled (~6 s on a CPU; 0.3 s per draw once compiled).
    Other sample counts share the redraw shapes but compile their own first chunk.
    Off with ``CFRL_APP_WARMUP=0`` (tests)."""
    if not warm_up_enabled() or checkpoint is None:
        return None
    with _WARMED_LOCK:
        if id(checkpoint) in _WARMED:
            return None
        _WARMED.add(id(checkpoint))

    def run() -> None:
        try:
            from core.sampler import precompile

            request = GenerateRequest()
            # every shape the default request can reach (a redraw round only when some crystal overlaps)
            precompile(checkpoint, request.num, reject_overlaps=request.reject_overlaps)
            generate(checkpoint, request)
        except Exception:  # noqa: BLE001 - a real click reports any problem in the page
            pass

    thread = threading.Thread(target=run, name="cfrl-warm-up-sampler", daemon=True)
    thread.start()
    return thread


def start_generation(pool, checkpoint, request: GenerateRequest, score_settings=None, name: str = "work"):
    """A background job that samples into ``pool`` and then, with ``score_settings``, scores the samples.

    Items are the (pool id, score row) pairs; the job's phase says what it is doing. The samples form a
    new run next to the earlier ones (nothing already in the pool is replaced).
    """
    from app import scoring
    from app.jobs import Job

    request.check()
    if score_settings is not None:
        scoring.preload(score_settings)

    def run(should_stop, job):
        ids = sample_into(pool, checkpoint, request, job)
        if score_settings is None or should_stop():
            return
        yield from scoring.score_rows([(pool, ids)], score_settings, should_stop, job)

    return Job(name, run, total=request.num).start()


def with_spacegroup_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add 'spacegroup_label' ('225 Fm-3m (cubic)') from the 'spacegroup' column."""
    from core.wyckoff import spacegroup_label

    out = frame.copy()
    out["spacegroup_label"] = [spacegroup_label(int(g)) if pd.notna(g) else None for g in out.get("spacegroup", [])]
    return out


def acceptance_note(rate: dict | None) -> str | None:
    """One line on overlap-aware sampling (``core.sampler.acceptance``), or None when it was off."""
    if not rate:
        return None
    n = rate["samples"]
    note = (f"Overlap-aware sampling: {rate['first_draw']} of {n} samples ({rate['first_draw'] / n:.0%}) fitted as "
            f"the model drew them; the others were drawn again until no two atoms were closer than 0.7 × the sum "
            f"of their covalent radii")
    if rate["flagged"]:
        note += f". {rate['flagged']} never fitted and are kept, still overlapping"
    return note + "."


def sample_summary(frame: pd.DataFrame) -> dict[str, str]:
    """Headline numbers of a generated batch: samples, buildable, distinct formulas, mean log p (nats)."""
    n = len(frame)
    built = frame[frame["build_error"].isna()]
    return {
        "Samples": f"{n}",
        "Buildable": f"{len(built)} ({len(built) / n:.0%})" if n else "0",
        "Distinct formulas": f"{built['formula'].nunique()}",
        "Mean log p": f"{frame['logp'].mean():.1f} nats" if n else "–",
    }
