"""Large screens (core.screen): deterministic batches, atomic per-batch storage, resuming, Ray workers.

Most tests use a tiny random checkpoint and ``FakeScorer`` (injected through ``ScreenSpec.scorer``),
so they check the machinery: the same rows with and without Ray, no row lost or doubled when a
worker process is killed or the run is interrupted, and parameters checked on resume. One test runs
the real default scorer (M3GNet + bundled hull) on Ray and compares its rows with
``core.scoring.pipeline.score`` called directly on the same structures.
"""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInputError
from core.screen import ScreenSpec, load_screen, plan, run_screen
from core.screen.results import structure_from_json
from core.screen.spec import canonical_spacegroups
from core.screen.store import ScreenStore

TINY = dict(num_layers=1, num_heads=2, key_size=8, model_size=16, embed_size=8, h0_size=16, Kx=4, Kl=2)
BATCH = 32          # one compiled sampler shape for every test


class FakeScorer:
    """Fast, deterministic stand-in for the scoring pipeline: formula, site count and density only."""

    delay_s = 0.0

    def __init__(self, spec: ScreenSpec) -> None:
        self.spec = spec

    def score(self, items):
        time.sleep(self.delay_s)
        rows = []
        for item in items:
            if isinstance(item, Exception):
                rows.append({"formula": None, "nsites": None, "density": None, "fom_ev": None, "error": str(item)})
            else:
                rows.append({"formula": item.composition.reduced_formula, "nsites": len(item),
                             "density": float(item.density), "fom_ev": float(len(item)), "error": None})
        return rows


class SlowFakeScorer(FakeScorer):
    """Takes a second per batch, so a worker can be killed while it holds one."""

    delay_s = 1.0


def hook(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from core.checkpoint import fresh_checkpoint, save_checkpoint
    from core.config import ModelConfig
    from core.screen.work import enable_compilation_cache

    enable_compilation_cache()
    config = ModelConfig(**TINY)
    folder = tmp_path_factory.mktemp("tiny") / "ck"
    save_checkpoint(folder, config, fresh_checkpoint(config).params)
    return folder


def fake_spec(checkpoint, num=6 * BATCH, scorer=FakeScorer, **kw) -> ScreenSpec:
    return ScreenSpec(str(checkpoint), spacegroups="1-230", num=num, batch_size=BATCH, seed=7, scorer=hook(scorer), **kw)


def rows(folder) -> pd.DataFrame:
    """Stored rows without the column that names the worker process."""
    return load_screen(folder, structures=False).drop(columns="worker")


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    """An uninterrupted in-process run of ``fake_spec``: the rows every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "screen"
    result = run_screen(fake_spec(checkpoint), out, use_ray=False, progress=False)
    assert result.complete and result.completed == 6 and not result.failed
    return rows(out)


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    from core.screen.executors import start_local_ray

    start_local_ray(2)
    yield ray
    ray.shutdown()


def plain(values) -> list:
    """Values with every kind of missing (None, NaN, pd.NA) as None, for comparing columns across dtypes."""
    return [None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v for v in values]


def assert_same_rows(folder, reference: pd.DataFrame) -> None:
    got = rows(folder)
    assert got["sample_id"].is_unique
    pd.testing.assert_frame_equal(got, reference)


# ---------------------------------------------------------------------------------------------- plan


def test_plan_is_deterministic_and_grouped_by_spacegroup():
    spec = ScreenSpec("unused", spacegroups="225,221", num=70, batch_size=16, seed=3).normalized()
    batches = plan(spec)
    assert [len(b.spacegroups) for b in batches] == [16, 16, 16, 16, 6]
    assert [b.first for b in batches] == [0, 16, 32, 48, 64]
    groups = np.concatenate([b.spacegroups for b in batches])
    assert np.all(np.diff(groups) >= 0)                                  # sorted: batches hold one group or two
    assert (groups == 221).sum() == 35 and (groups == 225).sum() == 35   # the list is cycled evenly
    assert plan(spec) == batches                                         # a pure function of the spec
    assert len({b.seed for b in batches}) == len(batches)
    other = plan(ScreenSpec("unused", spacegroups="225,221", num=70, batch_size=16, seed=4).normalized())
    assert [b.seed for b in other] != [b.seed for b in batches]
    train = plan(ScreenSpec("unused", spacegroups="train", num=50, batch_size=50, seed=0).normalized(), {12: 0.5, 225: 0.5})
    assert set(train[0].spacegroups) == {12, 225}
    assert canonical_spacegroups(" 1 - 230 ") == "1-230" and canonical_spacegroups("225, 221,222") == "225,221-222"
    with pytest.raises(InvalidInputError):
        canonical_spacegroups("0-5")


# ---------------------------------------------------------------------------------------------- in-process


def test_in_process_run_stores_every_sample_once(checkpoint, reference, tmp_path):
    assert reference["sample_id"].tolist() == list(range(6 * BATCH))
    built = reference["structure_json"].notna()
    assert built.any() and (~built).any()                      # the tiny model makes both
    # a sample that could not be built is a row with the builder's reason, not a lost row
    assert reference.loc[~built, "error"].str.startswith("not built").all()
    assert (reference.loc[~built, "build_error"] == reference.loc[~built, "error"].str.removeprefix("not built: ")).all()
    one = reference[built].iloc[0]
    structure = structure_from_json(one["structure_json"])
    assert structure.composition.reduced_formula == one["formula"] and len(structure) == one["nsites"]
    # sampled in the planned space group, with the planned batch
    batches = plan(fake_spec(checkpoint).normalized())
    planned = np.concatenate([b.spacegroups for b in batches])
    assert reference["generated_spacegroup"].tolist() == planned.tolist()
    assert np.isfinite(reference["logp"]).all()


def test_interrupted_run_resumes_without_redoing_batches(checkpoint, reference, tmp_path):
    out = tmp_path / "screen"

    def stop_after_two(batch_id, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_screen(fake_spec(checkpoint), out, use_ray=False, progress=False, on_batch=stop_after_two)
    store = ScreenStore(out)
    assert store.manifest()["status"] == "interrupted" and len(store.done()) == 2
    # a reader sees the two finished batches only, and ignores a half-written file
    (store.batches / ".batch_000005.parquet.999.tmp").write_bytes(b"garbage")
    partial = load_screen(out)
    assert partial.attrs["batches_done"] == 2 and not partial.attrs["complete"] and len(partial) == 2 * BATCH
    assert partial["structure"].map(lambda s: s is None or len(s) > 0).all()

    result = run_screen(fake_spec(checkpoint), out, use_ray=False, progress=False)
    assert (result.skipped, result.completed) == (2, 4) and result.complete
    assert store.manifest()["status"] == "finished"
    assert_same_rows(out, reference)
    again = run_screen(fake_spec(checkpoint), out, use_ray=False, progress=False)
    assert (again.skipped, again.completed) == (6, 0)


def test_other_parameters_are_refused(checkpoint, tmp_path):
    out = tmp_path / "screen"
    run_screen(fake_spec(checkpoint, num=BATCH), out, use_ray=False, progress=False)
    with pytest.raises(InvalidInputError, match="num: 32 in the screen, 64 now"):
        run_screen(fake_spec(checkpoint, num=2 * BATCH), out, use_ray=False, progress=False)
    with pytest.raises(InvalidInputError, match="temperature"):
        run_screen(fake_spec(checkpoint, num=BATCH, temperature=0.5), out, use_ray=False, progress=False)
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in checkpoint.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    (changed / "params.npz").write_bytes((checkpoint / "params.npz").read_bytes() + b"\0")
    with pytest.raises(InvalidInputError, match="model files differ"):
        run_screen(fake_spec(changed, num=BATCH), out, use_ray=False, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not a screen folder"):
        run_screen(fake_spec(checkpoint, num=BATCH), tmp_path / "other", use_ray=False, progress=False)


def test_cli_runs_resumes_and_summarises(checkpoint, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "cli"
    args = ["screen", "--checkpoint", str(checkpoint), "--spacegroups", "1-230", "--num", str(2 * BATCH),
            "--batch-size", str(BATCH), "--seed", "7", "--scorer", hook(FakeScorer), "--out", str(out), "--no-ray"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    frame = load_screen(out, structures=False)
    assert summary["counts"]["samples"] == 2 * BATCH == len(frame)
    assert summary["counts"]["built"] == int(frame["structure_json"].notna().sum())
    assert summary["counts"]["novel"] is None                    # the fake scorer judges no novelty
    best = frame.sort_values("fom_ev", ascending=False, kind="stable").iloc[0]
    assert summary["top_fom"][0]["sample_id"] == best["sample_id"]
    assert "summary: 64 samples" in capsys.readouterr().err
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().err and len(ScreenStore(out).done()) == 2
    assert main([*args[:-3], "--seed", "8", "--out", str(out), "--no-ray"]) == 2
    assert "seed: 7 in the screen, 8 now" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- Ray


def run_on_ray(spec: ScreenSpec, out, workers: int):
    """Run ``spec`` on fresh Ray actors; returns the result and the (closed) executor."""
    from core.screen.executors import RayExecutor

    executor = RayExecutor(spec.normalized(), workers=workers)
    try:
        return run_screen(spec, out, executor=executor, progress=False), executor
    finally:
        executor.close()


def test_ray_two_workers_match_in_process(checkpoint, reference, ray_instance, tmp_path):
    result, executor = run_on_ray(fake_spec(checkpoint), tmp_path / "screen", workers=2)
    assert result.complete and not result.failed
    assert_same_rows(tmp_path / "screen", reference)
    workers = set(load_screen(tmp_path / "screen", structures=False)["worker"])
    assert workers == {executor.started_workers["scorer-0"], executor.started_workers["scorer-1"]}


def test_ray_lost_worker_loses_and_doubles_nothing(checkpoint, reference, ray_instance, tmp_path):
    from core.screen.executors import RayExecutor

    spec = fake_spec(checkpoint, scorer=SlowFakeScorer)
    executor = RayExecutor(spec.normalized(), workers=2)
    killed = []

    def kill_a_worker(batch_id, done, total):
        if not killed:
            pid = executor.pids()["scorer-1"]
            os.kill(pid, signal.SIGKILL)     # mid-run: scorer-1 holds a batch
            killed.append(pid)

    try:
        result = run_screen(spec, tmp_path / "screen", executor=executor, progress=False, on_batch=kill_a_worker)
    finally:
        executor.close()
    assert killed and result.complete and not result.failed
    assert_same_rows(tmp_path / "screen", reference)
    pids = {int(w.rsplit(":", 1)[1]) for w in load_screen(tmp_path / "screen", structures=False)["worker"]}
    assert pids - set(executor.pids().values()), "a restarted scorer process should have finished some batches"


def test_ray_interrupted_run_resumes(checkpoint, reference, ray_instance, tmp_path):
    from core.screen.executors import RayExecutor

    spec = fake_spec(checkpoint)
    out = tmp_path / "screen"

    def interrupt(batch_id, done, total):
        raise KeyboardInterrupt

    executor = RayExecutor(spec.normalized(), workers=2)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_screen(spec, out, executor=executor, progress=False, on_batch=interrupt)
        assert len(ScreenStore(out).done()) == 1
        result = run_screen(spec, out, executor=executor, progress=False)
    finally:
        executor.close()
    assert (result.skipped, result.completed) == (1, 5)
    assert_same_rows(out, reference)


def test_ray_real_scorer_matches_pipeline(checkpoint, ray_instance, tmp_path):
    """The default scorer in a Ray actor gives what the scoring pipeline gives on the same structures."""
    from core.errors import InvalidInputError as NotBuilt
    from core.scoring.pipeline import score

    spec = ScreenSpec(str(checkpoint), spacegroups="1-230", num=8 * BATCH, batch_size=BATCH, seed=0,
                      properties=False, novelty="none")
    result, _ = run_on_ray(spec, tmp_path / "screen", workers=1)
    assert result.complete and not result.failed
    got = load_screen(tmp_path / "screen")
    assert got.attrs["unique_scope"] == "screen"
    items = [s if s is not None else NotBuilt(f"not built: {e}") for s, e in zip(got["structure"], got["build_error"])]
    expected = score(items, hull="bundled", properties=False)
    assert np.isfinite(pd.to_numeric(got["e_above_hull"], errors="coerce")).sum() >= 1   # the MLIP and hull ran
    for column in ("formula", "error", "struct_valid", "comp_valid", "hull_reference"):
        assert plain(got[column]) == plain(expected[column]), column
    # Same numbers up to float32 summation order (a 1-thread actor vs this process; batch make-up). The
    # random tiny model also makes absurd cells whose energies reach 1e18 eV/atom: there float32 leaves
    # only a few significant digits, so those rows are compared for being absurd on both sides.
    sane = np.abs(pd.to_numeric(expected["energy_per_atom"]).to_numpy(float)) < 1e3
    for column in ("energy_per_atom", "e_above_hull", "e_form_per_atom"):
        a, b = (pd.to_numeric(f[column]).to_numpy(float) for f in (got, expected))
        np.testing.assert_allclose(a[sane], b[sane], rtol=1e-5, atol=1e-4, equal_nan=True, err_msg=column)
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=column)
        assert np.all(~np.isfinite(a[~sane]) | (np.abs(a[~sane]) > 1e2)), column
    # screen-wide uniqueness = the pipeline's uniqueness over the whole set in one call
    assert plain(got["unique"]) == plain(expected["unique"])
    assert result.summary["counts"]["stable"] == int((pd.to_numeric(expected["e_above_hull"]) < 0.1).sum())
