"""Score chunks of structures in worker processes, one per CPU core.

On a CPU, torch's threads share the graph networks' arithmetic between cores, but the work around it
(graph building, space groups, descriptors, hull entries, relaxation steps) runs in one Python thread,
and Python threads cannot share it (the interpreter lock): on 2 cores two threads scored no faster
than one. Processes can. ``ChunkRunner`` hands whole chunks to worker processes forked from the
process that loaded the models, so they start in ~0.07 s and share the loaded weights copy-on-write;
each worker runs torch on one thread. A worker is sent only the index range of its
chunk (the structures are in the memory it was forked with) and sends back plain rows; results come
back in input order.

A chunk whose worker fails (an exception, or a worker killed, e.g. out of memory) is scored again in
this process, so a failure loses nothing. Workers need the ``fork`` start method (Linux, macOS) and a
program that forks safely: a script, the CLI or a notebook. The app scores in one process (it serves
pages from threads, and forking a threaded server is unsafe).
"""
from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

_MEASURE: Callable[[Sequence[Any]], Any] | None = None   # the parent's chunk function, inherited by fork
_ONE_POOL = threading.Lock()   # one pool at a time per process: _MEASURE is a single slot


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(device: str) -> int:
    """Worker processes for scoring on ``device``: every core on a CPU, 1 (this process) on a GPU."""
    return cpu_cores() if str(device).startswith("cpu") else 1


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def useful_workers(total: int, size: int, workers: int) -> int:
    """Workers worth starting for ``total`` items in chunks of ``size``: at most one per full chunk, since
    starting the pool (~0.07 s) and cutting chunks smaller only pays off when each worker gets a full
    chunk (a relaxation, one structure per chunk, always does)."""
    return max(1, min(int(workers), total // max(1, int(size)))) if can_fork() else 1


def spans(total: int, size: int, workers: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of at most ``size`` items covering ``range(total)``.

    With one worker: consecutive chunks of ``size`` (the last one shorter). With more (see
    ``useful_workers``): as many chunks as that needs, rounded up to a multiple of ``workers`` and of
    near-equal length, so the workers finish together (80 structures on 2 workers in chunks of 32:
    4 × 20, not 32 + 32 + 16).
    """
    size = max(1, int(size))
    count = -(-total // size)
    if workers > 1 and total:
        count = min(total, -(-max(count, workers) // workers) * workers)
        bounds = [round(i * total / count) for i in range(count + 1)]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _start_worker() -> None:
    """One OpenMP thread in a forked worker, always: GNU OpenMP (libgomp, shared by torch and LightGBM) is
    not fork-safe, and a parallel region in a child forked after the parent ran one hangs forever (seen
    with 2 torch threads per worker). With one thread neither library opens a parallel region; use one
    worker per core to use every core."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # and one BLAS thread: spinning BLAS threads of two workers starve each other


def _run_in_worker(items: Sequence[Any]) -> Any:
    assert _MEASURE is not None, "worker started without a chunk function"
    return _MEASURE(items)


class ChunkRunner:
    """Runs ``measure(chunk)`` for each chunk, in ``workers`` processes or in this one.

    Args:
        measure: scores one chunk; its argument and result must pickle.
        workers: processes to use (1: this process only).
        chunks: how many chunks will come (no pool for fewer than 2).
        ahead: chunks in flight per worker (bounds the work done after a stop).
    """

    def __init__(self, measure: Callable[[Sequence[Any]], Any], workers: int, chunks: int, ahead: int = 2) -> None:
        self.measure = measure
        self.workers = max(1, min(int(workers), chunks)) if can_fork() else 1  # chunks: from ``spans``
        self.ahead = ahead
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ChunkRunner:
        global _MEASURE
        if self.workers > 1 and not _ONE_POOL.acquire(blocking=False):
            self.workers = 1  # another thread's scoring holds the pool: score in this process
        if self.workers > 1:
            _MEASURE = self.measure
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_start_worker)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _MEASURE
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            _MEASURE = None
            _ONE_POOL.release()

    def map(self, chunks: Iterable[Sequence[Any]]) -> Iterator[Any]:
        """``measure(chunk)`` for each chunk, in order; a chunk is only started when the caller asks for
        results ``ahead × workers`` chunks before it."""
        if self._pool is None:
            for chunk in chunks:
                yield self.measure(chunk)
            return
        pending: collections.deque[tuple[Sequence[Any], Future]] = collections.deque()
        source = iter(chunks)
        while True:
            while len(pending) < self.ahead * self.workers:
                chunk = next(source, None)
                if chunk is None:
                    break
                pending.append((chunk, self._submit(chunk)))
            if not pending:
                return
            chunk, future = pending.popleft()
            yield self._result(chunk, future)

    def _submit(self, chunk: Sequence[Any]) -> Future | None:
        try:
            with warnings.catch_warnings():
                # JAX (the generative model) warns on every fork; the workers never call JAX, only torch
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                return self._pool.submit(_run_in_worker, chunk) if self._pool is not None else None
        except Exception as exc:  # noqa: BLE001 - a broken pool: score here
            log.warning("scoring worker pool unavailable (%s); scoring in this process", exc)
            return None

    def _result(self, chunk: Sequence[Any], future: Future | None) -> Any:
        if future is not None:
            try:
                return future.result()
            except Exception as exc:  # noqa: BLE001 - the chunk is scored again here, nothing is lost
                log.warning("scoring worker failed (%s: %s); scoring its chunk in this process", type(exc).__name__, exc)
        return self.measure(chunk)
