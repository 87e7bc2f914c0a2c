"""Long computations (scoring, PPO fine-tuning) in a background thread the pages can poll and stop.

Streamlit reruns a page's script on every click; a computation that lives in the script would be cut
off by the next click. A ``Job`` runs an iterator in its own thread instead: each item it yields is
handed to ``on_item`` and kept in ``items``; ``stop()`` asks the iterator to end (its ``should_stop``
returns True) and the thread finishes after the current item. Errors end the job with a one-line
message, never a traceback in the page. The thread never calls Streamlit.
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Iterator

from app.runtime import trace
from core.errors import CrystalFormerError

StopFlag = Callable[[], bool]


class Job:
    """A background iterator. ``make(should_stop, job)`` returns the iterator to run (it may call
    ``job.report`` to show progress that is not one item per step)."""

    def __init__(self, name: str, make: Callable[[StopFlag, "Job"], Iterator[Any]], total: int | None = None,
                 on_item: Callable[[Any], None] | None = None) -> None:
        self.name = name
        self.total = total
        self.items: list[Any] = []
        self.notes: list[str] = []        # what the page should say about this run (e.g. models left out)
        self.phase: str = name            # what it is doing now ("sampling", "scoring")
        self._done: int | None = None     # progress reported by the work itself (else: items so far)
        self.error: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._make, self._on_item = make, on_item
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cfrl-{name}", daemon=True)

    # ---- control -------------------------------------------------------------------------------
    def start(self) -> "Job":
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, benchmarks); True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- state ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def report(self, done: int | None = None, total: int | None = None, phase: str | None = None) -> None:
        """Progress from inside the work: ``done`` of ``total`` in ``phase`` (called by the job's thread)."""
        if phase is not None:
            if phase != self.phase:
                trace(f"job {self.name} {phase} at {self.elapsed_s:.2f} s")
            self.phase = phase
        if total is not None:
            self.total = total
        self._done = done

    @property
    def done(self) -> int:
        return self._done if self._done is not None else len(self.items)

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @property
    def state(self) -> str:
        """'running', 'stopped', 'failed' or 'finished'."""
        if self.running:
            return "running"
        return "stopped" if self.stopped else ("failed" if self.error else "finished")

    def status_line(self) -> str:
        """'scoring 12/100 · 8.1 s (running)' for progress bars and captions."""
        progress = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        return f"{self.phase} {progress} · {self.elapsed_s:.1f} s ({self.state})"

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        iterator = None
        try:
            iterator = iter(self._make(self._stop.is_set, self))
            for item in iterator:
                self.items.append(item)
                if self._on_item is not None:
                    self._on_item(item)
                if self._stop.is_set():
                    break
        except CrystalFormerError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the page as one line, logged in full
            self.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator stopped early runs its cleanup (e.g. saving) now
                try:
                    close()
                except Exception as exc:  # noqa: BLE001
                    self.error = self.error or f"{type(exc).__name__} while finishing: {exc}"
            self.finished_at = time.time()
            trace(f"job {self.name} ended after {self.elapsed_s:.2f} s")
