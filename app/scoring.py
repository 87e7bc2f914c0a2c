"""Scoring from the app: settings, available choices, and a background job that fills a Pool live.

The scoring itself is ``core.scoring.pipeline.score_iter``; this module only resolves the user's
choices into loaded models (cached in ``app.resources``) and runs the iterator in an ``app.jobs.Job``
so rows appear as they finish and the run can be stopped. ``SCORER`` can be set to a function with
``score_iter``'s signature (tests use a fast fake; a test server gets it as the ``--scorer`` argument of
``app/main.py``, see ``app.harness.use_stand_ins``).
"""
from __future__ import annotations

import functools
import importlib
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

from app.jobs import Job
from app.runtime import warm_up_enabled
from app.pool import Pool

NOVELTY_KINDS = {"none": "none (novelty not judged)",
                 "training": "training set (matbench_dielectric + MP hulls)"}
SCORER: Callable | None = None          # replaces core.scoring.pipeline.score_iter (tests: fast fakes)
STATIC_BATCH = 8                        # structures per batched model call: small, so rows appear often


@dataclass(frozen=True)
class ScoreSettings:
    """What the Score page asks: MLIP, relaxation, hull reference, novelty reference."""

    mlip: str = "m3gnet"         # core.scoring.mlip.DEFAULT_MLIP (not imported here: the app starts without torch)
    relax: bool = False
    hull: str = "bundled"        # "bundled" | "mp-api" | path to an entries file | "none"
    novelty: str = "none"        # key of NOVELTY_KINDS
    properties: bool = True      # band gap, ε_elec, FoM

    def with_(self, **kw) -> "ScoreSettings":
        return replace(self, **kw)

    def describe(self) -> str:
        relax = "relaxed" if self.relax else "static"
        return f"{self.mlip}, {relax}, hull: {self.hull}"


def mlip_names() -> tuple[str, ...]:
    from core.scoring.mlip import MLIP_NAMES

    return tuple(MLIP_NAMES)


def default_settings() -> ScoreSettings:
    from core.scoring.mlip import DEFAULT_MLIP

    return ScoreSettings(mlip=DEFAULT_MLIP, novelty="training")


def hull_kinds() -> tuple[str, ...]:
    from core.scoring.hull import HULL_KINDS

    return tuple(HULL_KINDS)


def property_models_unavailable() -> str | None:
    """Why band gap / ε_elec cannot be predicted here (None when they can)."""
    if SCORER is not None:
        return None
    consequence = "scoring computes energies and E_hull only, and Explore's gap–ε plane stays empty."
    try:
        from core.scoring.pipeline import load_property_models

        load_property_models()          # cached by the core: the scoring thread reuses them
    except Exception as exc:  # noqa: BLE001 - e.g. MissingResourceError naming the model folder and the fix
        return f"Band gap and ε_elec are not available: {exc} Until then {consequence}"
    return None


def effective(settings: ScoreSettings) -> tuple[ScoreSettings, list[str]]:
    """The settings that can actually run here, and notes about what had to be left out."""
    notes = []
    if settings.properties:
        why = property_models_unavailable()
        if why:
            settings = settings.with_(properties=False)
            notes.append(why)
    return settings, notes


def preload(settings: ScoreSettings) -> None:
    """Import what the scoring thread will import, here in the script thread.

    Two threads importing the same package tree at once can see half-initialised modules (Python's
    per-module import locks break such deadlocks by handing one thread a partial module), so the
    scoring thread must find everything already imported.
    """
    if SCORER is not None:
        return
    modules = ["core.scoring.pipeline", "core.scoring.metrics", "core.scoring.hull", "core.scoring.mlip"]
    if settings.relax:
        modules.append("core.scoring.relax")
    if settings.properties:
        modules += ["core.scoring.backends.bandgap", "core.scoring.dielectric"]
    for name in modules:
        importlib.import_module(name)


def resolve(settings: ScoreSettings) -> dict:
    """Keyword arguments for ``score_iter``: loaded models instead of names (any thread).

    The core caches loaded models per process (``load_mlip``, ``load_hull_reference``), so only the
    first run pays for loading. Raises the core's typed errors (MissingResourceError for absent
    weights or entries files).
    """
    if SCORER is not None:
        return dict(mlip=settings.mlip, relax=settings.relax, hull=settings.hull, properties=settings.properties,
                    training_set=None)
    from core.scoring.hull import load_hull_reference
    from core.scoring.mlip import load_mlip

    mlip = load_mlip(settings.mlip)
    hull = None if settings.hull == "none" else load_hull_reference(settings.hull, mlip)
    novelty = None if settings.novelty == "none" else novelty_reference(settings.novelty)
    return dict(mlip=mlip, relax=settings.relax, hull=hull, properties=settings.properties, training_set=novelty)


@functools.lru_cache(maxsize=2)
def novelty_reference(kind: str):
    """``core.scoring.references.training.novelty_reference`` built once per process (a few thousand structures)."""
    from core.scoring.references.training import novelty_reference as build

    return build(kind)


def score_rows(targets: Sequence[tuple[Pool, Sequence[int]]], settings: ScoreSettings, should_stop,
               job: Job | None = None) -> Iterator[tuple[int, dict]]:
    """Score pool entries, storing each finished row in its pool; yields (pool id, row).

    ``targets``: (pool, ids) pairs, so one run can score several pools (the Compare page's two arms).
    Reports progress to ``job`` when given.
    """
    keys = [(pool, i) for pool, ids in targets for i in ids if pool.structure(i) is not None]
    structures = [pool.structure(i) for pool, i in keys]
    if job is not None:
        job.report(0, len(structures), "loading models")
    kwargs = resolve(settings)
    score_iter = SCORER
    if score_iter is None:
        from core.scoring.pipeline import score_iter
    if job is not None:
        job.report(0, len(structures), "scoring")
    done = 0
    for index, row in score_iter(structures, should_stop=should_stop,
                                 batch_size=1 if settings.relax else STATIC_BATCH, **kwargs):
        pool, entry_id = keys[index]
        pool.record_score(entry_id, row)
        done += 1
        if job is not None:
            job.report(done)
        yield entry_id, row


_WARM_UP: threading.Thread | None = None


def warm_up(settings: ScoreSettings | None = None) -> threading.Thread | None:
    """Load the default scoring models in the background once per server process (idempotent).

    Started after the first page has been drawn, so the first Generate or Score click finds the MLIP,
    band-gap and ε models, the hull reference and the novelty reference loaded, and one crystal scored,
    instead of spending ~10 s on them (a click made meanwhile waits only for what is still loading: the
    core's loaders share their caches and locks). The scoring modules are imported here, in the script thread,
    first (``preload``); only loading runs in the background thread, like a scoring job.
    Off with the fake scorer (tests) and with ``CFRL_APP_WARMUP=0``.
    """
    global _WARM_UP
    if _WARM_UP is not None or SCORER is not None or not warm_up_enabled():
        return _WARM_UP
    settings = settings or default_settings()
    preload(settings)

    def load() -> None:
        try:
            property_models_unavailable()
            kwargs = resolve(settings)
            # one crystal through the whole pipeline: its first call pays ~2 s of one-off set-up (graph
            # converters, first forward passes) that would otherwise land on the first click
            from core.scoring.pipeline import score

            score([_rock_salt()], batch_size=STATIC_BATCH, **kwargs)
        except Exception:  # noqa: BLE001 - the click that needs them reports the problem in the page
            pass

    _WARM_UP = threading.Thread(target=load, name="cfrl-warm-up", daemon=True)
    _WARM_UP.start()
    return _WARM_UP


def _rock_salt():
    """NaCl (Fm-3m, a = 5.64 Å): the warm-up's crystal."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def start_scoring(targets: Sequence[tuple[Pool, Sequence[int]]], settings: ScoreSettings, name: str = "scoring") -> Job:
    """Score the given pool entries in a background job (items: (pool id, row) pairs)."""
    preload(settings)
    total = sum(1 for pool, ids in targets for i in ids if pool.structure(i) is not None)
    return Job(name, lambda stop, job: score_rows(targets, settings, stop, job), total=total).start()
