"""Where a screen's batches run: in this process, or on Ray actors.

Both executors take the batches to do and yield ``(batch, table or exception)`` as batches finish.

``RayExecutor`` makes ``workers`` slots, each a ``Sampler`` actor (holds the checkpoint) and a
``Scorer`` actor (holds the scoring models). A slot works on one batch at a time: its sampler's
result goes straight to its scorer through Ray's object store, and when the scorer returns, the slot
gets the next batch. Actors are restarted when their process dies (``max_restarts=-1``) and the call
that was running is retried (``max_task_retries``), so a lost worker costs only the batch it held.
With GPUs in the cluster each actor takes a share of them; otherwise each slot takes one CPU,
shared by its two actors, which never compute at the same time. Actors run with ``threads`` BLAS /
XLA threads (1 by default), so ``workers`` slots use ``workers`` cores.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any, Iterable, Iterator

from core.errors import CrystalFormerError
from core.screen.spec import Batch, ScreenSpec
from core.screen.work import Sampler, Scorer

TASK_RETRIES = 2             # retries of one batch's call after its worker process died
OBJECT_STORE_BYTES = 512 * 2**20


def thread_env(threads: int) -> dict[str, str]:
    """Environment limiting OpenMP/BLAS (torch) and XLA (JAX) to ``threads`` threads; set before they load."""
    n = str(max(1, int(threads)))
    env = {name: n for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if n == "1" and "--xla_cpu_multi_thread_eigen=false" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    return env


class LocalExecutor:
    """Runs the batches one after another in this process (``--no-ray``), with the actors' code."""

    name = "in-process"

    def __init__(self, spec: ScreenSpec) -> None:
        self.workers = 1
        self.sampler = Sampler(spec)
        self.scorer = Scorer(spec)
        self.sampler.ready()
        self.scorer.ready()

    def run(self, batches: Iterable[Batch]) -> Iterator[tuple[Batch, Any]]:
        for batch in batches:
            try:
                result = self.scorer.score(self.sampler.sample(batch))
            except CrystalFormerError:
                raise
            except Exception as exc:  # noqa: BLE001 - the run records it and goes on
                result = exc
            yield batch, result

    def close(self) -> None:
        pass


def start_local_ray(num_cpus: int) -> None:
    """Start a private Ray instance on this machine: ``num_cpus`` CPUs, loopback only, no dashboard, no usage
    stats, workers at this process's priority (Ray would otherwise lower it by 15 nice levels)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, logging_level="error")


def _unwrap(exc: BaseException) -> BaseException:
    """The user's exception inside a Ray task error (so typed errors keep their type and message)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayExecutor:
    """Runs batches on Ray actors: ``workers`` (sampler, scorer) slots.

    Args:
        spec: the screen.
        workers: slots (default: the cluster's CPUs / ``threads``).
        address: a running cluster ("auto", "ray://host:port"); None connects to the Ray instance this
            process already started, or starts a local one with ``num_cpus=workers`` (loopback only,
            no dashboard) that ``close()`` shuts down.
        threads: BLAS/XLA threads per actor.
    """

    name = "ray"

    def __init__(self, spec: ScreenSpec, workers: int | None = None, address: str | None = None, threads: int = 1) -> None:
        import ray

        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address=address, log_to_driver=False, logging_level="warning")
            else:
                start_local_ray((workers or os.cpu_count() or 1) * threads)
                self._started = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        self.workers = int(workers or max(1, cpus // threads))
        options = self._actor_options(threads, gpus)
        remote_sampler, remote_scorer = ray.remote(Sampler), ray.remote(Scorer)
        self.samplers = [remote_sampler.options(**options).remote(spec) for _ in range(self.workers)]
        self.scorers = [remote_scorer.options(**options).remote(spec) for _ in range(self.workers)]
        try:
            ids = ray.get([a.ready.remote() for a in self.samplers + self.scorers])
        except BaseException as exc:  # a loading error, or Ctrl-C while the workers start
            self.close()
            if isinstance(exc, Exception):
                raise _unwrap(exc) from None
            raise
        names = [f"sampler-{i}" for i in range(self.workers)] + [f"scorer-{i}" for i in range(self.workers)]
        self.started_workers = dict(zip(names, ids))   # name -> "host:pid" when the actors came up

    def _actor_options(self, threads: int, gpus: float) -> dict[str, Any]:
        env = thread_env(threads)
        # workers import this package (and a scorer hook's module) from the driver's code paths
        code_paths = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith((sys.prefix, sys.base_prefix))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(code_paths + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        options: dict[str, Any] = {"num_cpus": threads / 2, "max_restarts": -1, "max_task_retries": TASK_RETRIES}
        if gpus > 0:
            options["num_gpus"] = min(1.0, gpus / (2 * self.workers))
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"   # several JAX/torch processes share a device
        options["runtime_env"] = {"env_vars": env}
        return options

    def pids(self) -> dict[str, int]:
        """Process id of each actor as it started ("sampler-0", "scorer-1", ...), e.g. to test losing one."""
        return {name: int(ident.rsplit(":", 1)[1]) for name, ident in self.started_workers.items()}

    def run(self, batches: Iterable[Batch], slots: int | None = None) -> Iterator[tuple[Batch, Any]]:
        """Yield (batch, table or exception) as batches finish; ``slots`` limits the slots used (default: all)."""
        ray = self._ray
        todo = deque(batches)
        inflight: dict[Any, tuple[Batch, int, Any]] = {}   # score ref -> (batch, slot, sample ref)

        def submit(slot: int) -> None:
            batch = todo.popleft()
            sampled = self.samplers[slot].sample.remote(batch)
            inflight[self.scorers[slot].score.remote(sampled)] = (batch, slot, sampled)

        for slot in range(min(slots or self.workers, self.workers, len(todo))):
            submit(slot)
        try:
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                batch, slot, _ = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - task error or worker lost beyond its retries
                    result = _unwrap(exc)
                    if isinstance(result, CrystalFormerError):
                        raise result from None
                if todo:
                    submit(slot)
                yield batch, result
        finally:  # stopped early (Ctrl-C, error): drop the queued calls; their batches stay undone
            for ref, (_, _, sampled) in inflight.items():
                for pending in (ref, sampled):
                    try:
                        ray.cancel(pending)
                    except Exception:  # noqa: BLE001 - already finished or running
                        pass

    def close(self) -> None:
        ray = self._ray
        for actor in getattr(self, "samplers", []) + getattr(self, "scorers", []):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._started:
            ray.shutdown()
            self._started = False
