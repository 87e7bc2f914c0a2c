"""One bad structure never fails a batch: run a batched model call, and on failure each item alone.

Every batched step of the scorers (MLIP energies, the pipeline's stages, the uncertainty committee)
goes through ``isolate_failures``, so the rule is written once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from core.errors import ScoringError

Item = TypeVar("Item")


def _keep(exc: Exception) -> Exception:
    return exc


def isolate_failures(run: Callable[[list[Item]], Sequence[Any]], items: Sequence[Item],
                     failed: Callable[[Exception], Exception] = _keep) -> list[Any]:
    """``run(items)`` as one call; if it raises or returns the wrong number of results, ``run([item])``
    for each item, so only the item that breaks gets an error.

    Args:
        run: the batched call, one result per item (a result may itself be an exception).
        items: the batch.
        failed: turns the exception an item's own call raised into what its slot holds (default: as is).

    Returns:
        One slot per item: its result, or ``failed(exception)``.
    """
    items = list(items)
    if not items:
        return []
    try:
        results = list(run(items))
        if len(results) == len(items):
            return results
        problem: Exception = ScoringError(f"returned {len(results)} results for {len(items)} structures")
    except Exception as exc:  # noqa: BLE001 - retried one at a time below
        problem = exc
    if len(items) == 1:
        return [failed(problem)]
    out: list[Any] = []
    for item in items:
        out.extend(isolate_failures(run, [item], failed))
    return out
