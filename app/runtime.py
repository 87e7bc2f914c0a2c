"""Process-wide settings for the app's computations."""
from __future__ import annotations

import functools


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
