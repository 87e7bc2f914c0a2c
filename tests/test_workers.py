"""Scoring in worker processes: the same table as in one process, in input order, and a failing worker
loses nothing."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from core.scoring import hull, pipeline, workers
from core.scoring.pipeline import score
from core.cell_memo import Cell
from core.scoring.workers import ChunkRunner, close_workers, portable, restored, spans, useful_workers
from scoring_doubles import FakeMLIP, FakePropertyModel, rocksalt

MU = {"Na": -1.31, "Cl": -1.84, "K": -1.11, "Br": -1.63, "Li": -1.91, "F": -1.91, "Mg": -1.60, "O": -4.95}
needs_fork = pytest.mark.skipif(not workers.can_fork(), reason="worker processes need the fork start method")


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    models = (FakePropertyModel(lambda s: 0.5 * len(s), bad="K"), FakePropertyModel(lambda s: 2.0 + 0.1 * len(s)))
    monkeypatch.setattr(pipeline, "load_property_models", lambda device=None: models)
    yield FakeMLIP(dict(MU))
    hull._STORES.clear()
    hull._REFERENCES.clear()


def mixed_batch() -> list:
    """Good crystals of several formulas (with duplicates, for uniqueness), bad ones and a non-structure."""
    pairs = [("Na", "Cl"), ("K", "Br"), ("Li", "F"), ("Mg", "O")]
    items: list = []
    for i in range(22):
        a, b = pairs[i % 4]
        items.append(rocksalt(4.2 + 0.05 * (i % 3), (a, b)))
    items[5] = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])   # overlapping atoms
    items[13] = None
    return items


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    for column in a.columns:
        left = [None if pd.isna(x) else x for x in a[column]]
        right = [None if pd.isna(x) else x for x in b[column]]
        assert left == right, column


def test_spans_cover_every_item_once_and_balance_the_workers():
    assert spans(200, 32) == [(i, min(i + 32, 200)) for i in range(0, 200, 32)]
    for total, size, count in [(200, 32, 2), (100, 32, 4), (64, 32, 2), (5, 1, 2), (1, 1, 3)]:
        chunks = spans(total, size, count)
        assert [i for a, b in chunks for i in range(a, b)] == list(range(total))
        lengths = [b - a for a, b in chunks]
        assert max(lengths) <= size and max(lengths) - min(lengths) <= 1
        assert len(chunks) % count == 0 or len(chunks) == total
    assert spans(0, 32, 2) == []
    assert useful_workers(40, 32, 2) == 1            # one full chunk: not worth a pool
    assert useful_workers(64, 32, 8) == min(2, 2 if workers.can_fork() else 1)
    assert useful_workers(5, 1, 2) == (2 if workers.can_fork() else 1)   # relaxations: one structure a chunk


@needs_fork
def test_workers_give_the_same_table_in_input_order(fakes):
    items = mixed_batch()
    one = score(items, mlip=fakes, hull=None, batch_size=4, workers=1)
    two = score(items, mlip=fakes, hull=None, batch_size=4, workers=2)
    same_table(one, two)
    assert "overlapping" in two.loc[5, "error"] and "not a pymatgen Structure" in two.loc[13, "error"]
    # judged across chunks: one unique crystal per formula (StructureMatcher scales the lattice constants away)
    assert two["unique"].tolist().count(True) == 4


def test_structures_travel_to_workers_unchanged():
    """What a worker rebuilds is the same crystal bit for bit (lattice, fractional and Cartesian
    coordinates, species with oxidation states), with its site and structure properties; anything else
    travels as itself."""
    lattice = Lattice(np.array([[4.1, 0.013, 0.0], [0.3, 4.4, 0.0], [0.1, 0.2, 5.3]]) * (1 + 1e-13), pbc=(True, True, False))
    crystal = Structure(lattice, ["Na+", "Cl-", "Cl-"], [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8], [1 / 3, 2 / 3, 0.55]],
                        coords_are_cartesian=False, site_properties={"magmom": [0.0, 0.5, -0.5]},
                        properties={"shift": 0.25, "source": "sample 7"}, charge=-1.0)
    crystal.perturb(0.07, seed=3)
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    error = ValueError("unreadable file")
    back = restored(portable([crystal, None, disordered, error]))
    copy = back[0]
    assert copy is not crystal and Cell.of(copy).key == Cell.of(crystal).key
    assert np.array_equal(copy.cart_coords, crystal.cart_coords)
    assert copy.lattice.pbc == (True, True, False)
    assert [str(sp) for sp in copy.species] == ["Na+", "Cl-", "Cl-"]
    assert copy.site_properties == {"magmom": [0.0, 0.5, -0.5]}
    assert copy.properties == {"shift": 0.25, "source": "sample 7"} and copy.charge == -1.0
    assert back[1] is None and back[2] is disordered and back[3] is error


@needs_fork
def test_the_pool_is_kept_for_calls_with_the_same_models():
    """Workers are forked once and serve later calls with the same models; other models get a new pool."""
    models, others = object(), object()

    def where(chunk: list) -> int:
        return os.getpid()

    def pids(keep: tuple, chunks: int = 4) -> set[int]:
        """The pool's worker processes, after checking that they (and only they) served the chunks. Which
        workers serve a call varies (one fast worker may take every chunk), so compare pools, not servers."""
        with ChunkRunner(where, workers=2, chunks=chunks, keep=keep) as runner:
            served = set(runner.map([[i] for i in range(chunks)]))
            pool = set(runner._pool.executor._processes)     # pid -> process of the executor's workers
        assert served and served <= pool
        return pool

    try:
        first = pids((models,))
        assert os.getpid() not in first and len(first) >= 1
        assert pids((models,)) == first                     # the same processes
        replaced = pids((others,))
        assert not replaced & first                         # other models: a new pool
        close_workers()
        assert not pids((others,)) & replaced               # closed: forked again
    finally:
        close_workers()


@needs_fork
def test_a_kept_pool_scores_structures_made_after_it_started(fakes):
    """Structures made after the workers were forked reach them (they are sent, not inherited), with the
    properties the MLIP reads."""
    score(mixed_batch(), mlip=fakes, hull=None, batch_size=4, workers=2)
    pool = workers._KEPT
    assert pool is not None
    later = [rocksalt(5.0 + 0.07 * i, ("Na", "Cl")) for i in range(10)]
    for i, crystal in enumerate(later):
        crystal.properties["shift"] = 0.01 * i
    two = score(later, mlip=fakes, hull=None, batch_size=4, workers=2)
    assert workers._KEPT is pool                            # the same workers served the second call
    same_table(two, score(later, mlip=fakes, hull=None, batch_size=4, workers=1))
    assert two["error"].isna().all()
    assert np.allclose(two["energy_per_atom"], (MU["Na"] + MU["Cl"]) / 2 + 0.01 * np.arange(10))


@needs_fork
def test_relaxations_spread_over_workers(fakes):
    # the real batched FIRE: FakeMLIP's flat energy surface (zero forces and stress) is a minimum at step 0
    items = [rocksalt(5.6 + 0.01 * i) for i in range(6)]
    one = score(items, mlip=fakes, relax=True, hull=None, properties=False, workers=1)
    two = score(items, mlip=fakes, relax=True, hull=None, properties=False, workers=3)
    same_table(one, two)
    assert two["relaxed"].all()


@needs_fork
def test_a_worker_that_dies_loses_nothing(fakes, monkeypatch):
    parent = os.getpid()
    real = pipeline._Scorer.measure_packed

    def dies_in_a_worker(self, items):
        if os.getpid() != parent:
            os._exit(3)          # a worker killed mid-chunk (e.g. out of memory)
        return real(self, items)

    monkeypatch.setattr(pipeline._Scorer, "measure_packed", dies_in_a_worker)
    items = mixed_batch()
    table = score(items, mlip=fakes, hull=None, batch_size=4, workers=2)
    assert workers._KEPT is None                            # a broken pool is not kept
    monkeypatch.setattr(pipeline._Scorer, "measure_packed", real)
    same_table(table, score(items, mlip=fakes, hull=None, batch_size=4, workers=1))
    same_table(table, score(items, mlip=fakes, hull=None, batch_size=4, workers=2))   # a new pool works


@needs_fork
def test_stop_with_workers_returns_the_rows_done(fakes):
    items = [rocksalt(5.6 + 0.01 * i) for i in range(12)]
    seen = []
    table = score(items, mlip=fakes, hull=None, batch_size=2, workers=2,
                  progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) >= 2)
    assert table.attrs["stopped"] and len(table) == seen[-1] == 4
    assert list(table.index) == [0, 1, 2, 3]
    # the kept workers drop the chunks the stopped call had sent ahead, and serve the next call in full
    same_table(score(items, mlip=fakes, hull=None, batch_size=2, workers=2),
               score(items, mlip=fakes, hull=None, batch_size=2, workers=1))


@needs_fork
def test_no_fork_warning_after_jax_ran(fakes):
    """A notebook samples with JAX, then scores with workers: the workers never call JAX, so JAX's
    fork warning must not alarm the user."""
    import warnings

    import jax.numpy as jnp

    assert float(jnp.sum(jnp.arange(4.0))) == 6.0
    items = [rocksalt(5.6 + 0.01 * i) for i in range(8)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = score(items, mlip=fakes, hull=None, batch_size=2, workers=2)
    assert table["error"].isna().all()
    assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]


def test_runner_runs_in_process_when_one_worker_or_busy():
    calls = []
    with ChunkRunner(lambda chunk: calls.append(os.getpid()) or sum(chunk), workers=1, chunks=3) as runner:
        assert list(runner.map([[1, 2], [3], [4, 5]])) == [3, 3, 9]
    assert set(calls) == {os.getpid()}


@needs_fork
def test_workers_never_open_openmp_threads_after_fork(tmp_path):
    """GNU OpenMP hangs in a forked child that opens a parallel region: workers must run one thread even
    when there are more cores than workers (run in a subprocess with a deadline, so a hang fails)."""
    import subprocess
    import sys

    script = tmp_path / "many_cores.py"
    script.write_text(
        "import torch\n"
        "from pymatgen.core import Lattice, Structure\n"
        "from core.scoring import workers\n"
        "from core.scoring.pipeline import score\n"
        "workers.cpu_cores = lambda: 8\n"
        "torch.set_num_threads(2)\n"
        "items = [Structure.from_spacegroup('Fm-3m', Lattice.cubic(5.5 + 0.05 * i), ['Na', 'Cl'],"
        " [[0, 0, 0], [0.5, 0.5, 0.5]]) for i in range(8)]\n"
        "score(items[:2], hull=None)\n"                       # the parent runs OpenMP regions first
        "table = score(items, hull=None, batch_size=4, workers=2)\n"
        "print('rows', len(table), int(table['error'].isna().sum()))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parent.parent),
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rows 8 8" in done.stdout


@needs_fork
def test_real_models_agree_across_processes():
    """M3GNet, MEGNet and the ε model in forked workers give the numbers they give here."""
    items = [rocksalt(5.5 + 0.05 * i) for i in range(4)] + [rocksalt(4.1 + 0.05 * i, ("Mg", "O")) for i in range(4)]
    one = score(items, hull=None, batch_size=4, workers=1)
    two = score(items, hull=None, batch_size=4, workers=2)
    for column in ("energy_per_atom", "band_gap_ev", "eps_elec", "fom_ev"):
        assert np.allclose(one[column].astype(float), two[column].astype(float), atol=1e-5), column
    assert two["error"].isna().all()
