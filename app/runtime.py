"""Process-wide settings for the app's computations."""
from __future__ import annotations

import functools
import os
import sys
import time


@functools.cache
def enable_compilation_cache() -> None:
    """Keep JAX's compiled sampler on disk (``<cache dir>/jax``) so a restarted app does not recompile.

    Compiling the sampler for a batch shape takes tens of seconds on a CPU; with this cache a second
    start of the app (or a second server process) reuses the executables.
    """
    import jax

    from core import settings

    try:
        jax.config.update("jax_compilation_cache_dir", str(settings.cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception:  # noqa: BLE001 - an older jax without the option only loses the speed-up
        pass


def warm_up_enabled() -> bool:
    """Whether the app preloads models and compiles the sampler ahead of the first click
    (``CFRL_APP_WARMUP``, default on; tests switch it off)."""
    return os.environ.get("CFRL_APP_WARMUP", "1") != "0"


def trace(message: str) -> None:
    """With ``CFRL_APP_TRACE`` set, one timestamped line on stderr (script runs, job phases) for profiling."""
    if os.environ.get("CFRL_APP_TRACE"):
        print(f"CFRL_TRACE {time.time():.3f} {message}", file=sys.stderr, flush=True)
