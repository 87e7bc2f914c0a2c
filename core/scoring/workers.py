"""Score chunks of structures in worker processes, one per CPU core.

On a CPU, torch's threads share the graph networks' arithmetic between cores, but the work around it
(graph building, space groups, descriptors, hull entries, relaxation steps) runs in one Python thread,
and Python threads cannot share it (the interpreter lock): on 2 cores two threads scored no faster
than one. Processes can. ``ChunkRunner`` hands whole chunks to worker processes forked from the
process that loaded the models, so they share the loaded weights copy-on-write; each worker runs torch
on one thread. Structures travel to a worker as arrays (``portable``: lattice, species, fractional
coordinates, properties), rows come back as plain values, in input order.

A freshly forked worker's first chunk is slow (~0.15 s more on 2 cores: it copies the pages it
writes, e.g. every Python object it touches). So a pool is kept after the call (``keep``) and reused by
the next call with the same models, as the models themselves are loaded once: a notebook or an RL loop
that scores batch after batch pays for the fork once. ``close_workers()`` stops a kept pool; a call
with other models replaces it.

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
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import numpy as np
from pymatgen.core import Lattice, Structure

log = logging.getLogger(__name__)

_MEASURE: Callable[[Sequence[Any]], Any] | None = None   # the pool's chunk function, inherited by fork
_ONE_POOL = threading.Lock()   # one pool in use at a time per process: _MEASURE is a single slot


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


class PackedStructure(NamedTuple):
    """An ordered ``Structure`` as it travels to a worker (pickling a Structure whole costs ~1 ms to
    unpickle, this ~0.1 ms)."""

    matrix: np.ndarray                 # lattice vectors, Å
    pbc: tuple[bool, bool, bool]
    species: list[Any]                 # Element / Species per site
    frac_coords: np.ndarray
    site_properties: dict[str, list] | None
    properties: dict[str, Any] | None
    charge: float | None               # as set on the structure (None: from oxidation states)


def portable(items: Sequence[Any]) -> list[Any]:
    """``items`` as they travel to a worker: an ordered ``Structure`` as a ``PackedStructure``, anything
    else as itself."""
    return [PackedStructure(item.lattice.matrix, item.lattice.pbc, item.species, item.frac_coords,
                            item.site_properties or None, dict(item.properties) or None,
                            getattr(item, "_charge", None))  # ``.charge`` would compute it and may warn
            if type(item) is Structure and item.is_ordered else item for item in items]


def restored(payload: Sequence[Any]) -> list[Any]:
    """The items ``portable`` packed: the same lattice, species, fractional coordinates (bit for bit; pymatgen
    derives Cartesian ones from them) and site / structure properties."""
    return [Structure(Lattice(item.matrix, pbc=item.pbc), item.species, item.frac_coords, charge=item.charge,
                      site_properties=item.site_properties, properties=item.properties)
            if isinstance(item, PackedStructure) else item for item in payload]


def _start_worker() -> None:
    """One OpenMP thread in a forked worker, always: GNU OpenMP (libgomp, shared by torch and LightGBM) is
    not fork-safe, and a parallel region in a child forked after the parent ran one hangs forever (seen
    with 2 torch threads per worker). With one thread neither library opens a parallel region; use one
    worker per core to use every core."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # and one BLAS thread: spinning BLAS threads of two workers starve each other


def _run_in_worker(payload: Sequence[Any]) -> Any:
    assert _MEASURE is not None, "worker started without a chunk function"
    return _MEASURE(restored(payload))


class _Pool:
    """Worker processes forked with one chunk function; ``key`` holds the objects it was forked with
    (models, options), compared by identity to decide whether a later call may reuse it."""

    def __init__(self, measure: Callable[[Sequence[Any]], Any], workers: int, key: tuple) -> None:
        global _MEASURE
        _MEASURE = measure
        self.workers = workers
        self.key = key
        self.broken = False
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_start_worker)

    def fits(self, workers: int, key: tuple) -> bool:
        return (not self.broken and self.workers == workers and len(self.key) == len(key)
                and all(a is b for a, b in zip(self.key, key)))

    def close(self) -> None:
        global _MEASURE
        self.executor.shutdown(wait=False, cancel_futures=True)
        _MEASURE = None


_KEPT: _Pool | None = None   # the pool a call left for the next one (guarded by _ONE_POOL)


def close_workers() -> None:
    """Stop the kept worker processes (their memory is freed); the next call with workers forks new ones.
    Call it after changing a loaded model in place: workers hold the models as they were at the fork."""
    global _KEPT
    with _ONE_POOL:
        if _KEPT is not None:
            _KEPT.close()
            _KEPT = None


def _forget_pool_in_child() -> None:
    """A process forked from this one (a worker, or any other fork) neither uses nor stops our pool."""
    global _KEPT, _ONE_POOL
    _KEPT = None
    _ONE_POOL = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)  # at exit, concurrent.futures stops the workers


class ChunkRunner:
    """Runs ``measure(chunk)`` for each chunk, in ``workers`` processes or in this one.

    Args:
        measure: scores one chunk (a list of items); its result must pickle. In a worker it gets the items
            back from ``portable`` / ``restored``.
        workers: processes to use (1: this process only).
        chunks: how many chunks will come (no pool for fewer than 2).
        ahead: chunks in flight per worker (bounds the work done after a stop).
        keep: the objects ``measure`` depends on (loaded models, options): the pool stays after this call and
            serves the next one whose ``measure`` is the same function with the same objects. None: the pool
            is stopped at the end of the call.
    """

    def __init__(self, measure: Callable[[Sequence[Any]], Any], workers: int, chunks: int, ahead: int = 2,
                 keep: tuple | None = None) -> None:
        self.measure = measure
        self.workers = max(1, min(int(workers), chunks)) if can_fork() else 1  # chunks: from ``spans``
        self.ahead = ahead
        self.keep = None if keep is None else (getattr(measure, "__func__", measure), *keep)
        self._pool: _Pool | None = None

    def __enter__(self) -> ChunkRunner:
        global _KEPT
        if self.workers > 1 and not _ONE_POOL.acquire(blocking=False):
            self.workers = 1  # another thread's scoring holds the pool: score in this process
        if self.workers > 1:
            if _KEPT is not None and self.keep is not None and _KEPT.fits(self.workers, self.keep):
                self._pool = _KEPT
            else:
                if _KEPT is not None:
                    _KEPT.close()
                self._pool = _Pool(self.measure, self.workers, self.keep or ())
            _KEPT = None
        return self

    def __exit__(self, *exc: Any) -> None:
        global _KEPT
        if self._pool is not None:
            if self.keep is not None and not self._pool.broken:
                _KEPT = self._pool
            else:
                self._pool.close()
            self._pool = None
            _ONE_POOL.release()

    def map(self, chunks: Iterable[Sequence[Any]]) -> Iterator[Any]:
        """``measure(chunk)`` for each chunk, in order; a chunk is only started when the caller asks for
        results ``ahead × workers`` chunks before it. Chunks not started when the caller stops are dropped."""
        if self._pool is None:
            for chunk in chunks:
                yield self.measure(chunk)
            return
        pending: collections.deque[tuple[Sequence[Any], Future | None]] = collections.deque()
        source = iter(chunks)
        try:
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
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()

    def _submit(self, chunk: Sequence[Any]) -> Future | None:
        if self._pool is None or self._pool.broken:
            return None
        try:
            with warnings.catch_warnings():
                # JAX (the generative model) warns on every fork; the workers never call JAX, only torch
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                return self._pool.executor.submit(_run_in_worker, portable(chunk))
        except Exception as exc:  # noqa: BLE001 - a broken pool: score here
            log.warning("scoring worker pool unavailable (%s); scoring in this process", exc)
            self._pool.broken = True
            return None

    def _result(self, chunk: Sequence[Any], future: Future | None) -> Any:
        if future is not None:
            try:
                return future.result()
            except Exception as exc:  # noqa: BLE001 - the chunk is scored again here, nothing is lost
                if isinstance(exc, BrokenProcessPool) and self._pool is not None:
                    self._pool.broken = True
                log.warning("scoring worker failed (%s: %s); scoring its chunk in this process", type(exc).__name__, exc)
        return self.measure(chunk)
