"""Running a screen: plan the batches, skip the finished ones, run the rest, store each as it finishes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.screen.progress import Progress
from core.screen.results import finalize, format_summary
from core.screen.spec import ScreenSpec, checkpoint_digest, plan
from core.screen.store import ScreenStore


@dataclass
class ScreenResult:
    """What one run did. ``finished_at`` holds (batch id, seconds since the work started) in finishing order."""

    folder: Path
    n_batches: int
    skipped: int                     # batches already on disk when the run started
    completed: int                   # batches this run finished and stored
    failed: dict[int, str]           # batch id -> error (rerun the same command to retry them)
    samples_per_s: float             # this run's samples / wall time of its work
    summary: dict[str, Any] | None
    finished_at: list[tuple[int, float]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.skipped + self.completed == self.n_batches


def _distribution(spec: ScreenSpec) -> dict[int, float] | None:
    if spec.spacegroups != "train":
        return None
    from core.checkpoint import load_checkpoint

    return load_checkpoint(spec.checkpoint, spec.config).meta.get("spacegroup_distribution")


def make_executor(spec: ScreenSpec, use_ray: bool = True, workers: int | None = None, ray_address: str | None = None):
    """``RayExecutor`` (local instance or ``ray_address``) or, with ``use_ray=False``, ``LocalExecutor``."""
    from core.screen.executors import LocalExecutor, RayExecutor

    return RayExecutor(spec, workers=workers, address=ray_address) if use_ray else LocalExecutor(spec)


def run_screen(spec: ScreenSpec, out: str | Path, *, use_ray: bool = True, workers: int | None = None,
               ray_address: str | None = None, executor: Any = None, progress: bool = True,
               on_batch: Callable[[int, int, int], None] | None = None, summarize: bool = True) -> ScreenResult:
    """Run (or resume) the screen ``spec`` into folder ``out``.

    Args:
        spec: what to sample and score (``ScreenSpec``).
        out: output folder; a new one is created, an existing screen with the same spec is resumed.
        use_ray / workers / ray_address: where to run (``make_executor``); ignored when ``executor`` is given.
        executor: a ready executor (``RayExecutor`` / ``LocalExecutor``); the caller closes it.
        progress: print progress (samples, samples/s, ETA) and the summary to stderr.
        on_batch: called as ``on_batch(batch_id, batches_done, n_batches)`` after each batch is stored.
        summarize: compute screen-wide uniqueness and write ``summary.json`` at the end.

    Raises:
        InvalidInputError: bad parameters, ``out`` holds another screen, or another process runs it.
        KeyboardInterrupt: after marking the screen "interrupted"; stored batches are kept.
    """
    spec = spec.normalized()
    from core.settings import require

    require(spec.checkpoint, "checkpoint", "Pass --checkpoint a checkpoint folder or official .pkl file.")
    batches = plan(spec, _distribution(spec))
    store = ScreenStore(out)
    with store.lock():
        store.create_or_check(spec.to_dict(), checkpoint_digest(spec.checkpoint), len(batches))
        done = store.done()
        todo = [b for b in batches if b.id not in done]
        report = Progress(spec.num, sum(len(b.spacegroups) for b in batches if b.id in done), enabled=progress)
        if done:
            report.note(f"resuming {store.folder}: {len(done)}/{len(batches)} batches already done")
        result = ScreenResult(store.folder, len(batches), len(done), 0, {}, 0.0, None)
        owned = executor is None and bool(todo)
        status = "failed"
        try:
            if todo:
                if owned:
                    report.note(f"starting workers ({'Ray' if use_ray else 'in-process'})...")
                    executor = make_executor(spec, use_ray, workers, ray_address)
                t0 = time.monotonic()
                report.t0 = t0
                for batch, frame in executor.run(todo):
                    if isinstance(frame, BaseException):
                        result.failed[batch.id] = f"{type(frame).__name__}: {frame}"
                        report.note(f"batch {batch.id} failed: {result.failed[batch.id]}")
                        continue
                    store.write_batch(batch.id, frame)
                    result.completed += 1
                    result.finished_at.append((batch.id, time.monotonic() - t0))
                    report.advance(len(frame))
                    if on_batch is not None:
                        on_batch(batch.id, result.skipped + result.completed, len(batches))
                result.samples_per_s = report.rate
            status = "finished" if result.complete else "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            report.close()
            if owned and executor is not None:
                executor.close()
            store.set_status(status, failed_batches=sorted(result.failed))
            if status == "interrupted":
                report.note(f"interrupted: {result.skipped + result.completed}/{len(batches)} batches are stored in "
                            f"{store.folder}; rerun the same command to resume")
        if summarize:
            result.summary = finalize(store.folder)
            report.note(format_summary(result.summary))
        if result.failed:
            report.note(f"{len(result.failed)} batches failed; rerun the same command to retry them")
    return result
