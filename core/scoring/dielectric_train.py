"""Train the shipped ε_elec model on matbench_dielectric (see ``core.scoring.dielectric``).

Data: matbench_dielectric, 4,764 Materials Project structures with the DFPT refractive index n,
as shipped inside the crystal-toolkit wheel (``crystal_toolkit/apps/examples/matbench_dielectric.json.gz``;
row order = matbench order). Retrain the shipped model on all of it (≈ 5-8 min on 2 shared CPU cores)::

    nice -n 10 .venv/bin/python -m core.scoring.dielectric_train --out checkpoints/dielectric

``bench/dielectric.py`` runs the matbench 5-fold protocol with the same ``fit_model`` and then calls
this training on all rows, writing the model card.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from core.scoring.references.matbench import matbench_dielectric_path
from core.scoring.references.training import load_matbench_dielectric
from core.scoring.dielectric import (
    DescriptorDielectricModel, FEATURE_NAMES, FEATURE_VERSION, default_model_dir, descriptors, lorentz_lorenz,
    save_descriptor_model,
)

DATASET = "matbench_dielectric"
MATBENCH_SEED = 18012019        # matbench's KFold random_state
SEEDS = (0, 1, 2)               # one LightGBM booster per seed; the model averages their ln n
ROUNDS = 1200
LL_FIT_MAX_N = 4.0              # rows with n ≥ this (metal-like, ill-conditioned DFPT) do not enter the α fit
LIGHTGBM_PARAMS = {
    "objective": "l1",          # the metric is MAE and n has a long tail (n up to 62): fit the median
    "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 10, "feature_fraction": 0.5,
    "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "num_threads": 1,           # deterministic, and fastest on a shared 2-core machine
    "deterministic": True, "verbose": -1,
}


def data_path() -> Path:
    """The matbench_dielectric file inside the installed crystal-toolkit wheel."""
    return matbench_dielectric_path()


def descriptor_matrix(structures: Sequence[Structure], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Rows of ``descriptors(structure)`` (label-free, so computed once for all folds)."""
    rows = []
    for i, structure in enumerate(structures):
        rows.append(descriptors(structure))
        if progress and (i + 1) % 500 == 0:
            progress(i + 1, len(structures))
    return np.vstack(rows)


def fit_polarizabilities(structures: Sequence[Structure], n: np.ndarray) -> dict[str, float]:
    """Per-element electronic polarisability α (Å³) from Lorentz–Lorenz, non-negative least squares.

    (n² − 1)/(n² + 2) · 3V/(4π) = Σ_i α_i over the atoms of each cell (V in Å³); rows with
    n ≥ ``LL_FIT_MAX_N`` are left out.
    """
    from scipy.optimize import nnls

    keep = [i for i in range(len(structures)) if n[i] < LL_FIT_MAX_N]
    symbols = sorted({el.symbol for i in keep for el in structures[i].composition.elements})
    column = {s: j for j, s in enumerate(symbols)}
    counts = np.zeros((len(keep), len(symbols)))
    target = np.empty(len(keep))
    for row, i in enumerate(keep):
        for el, amount in structures[i].composition.items():
            counts[row, column[el.symbol]] += amount
        eps = n[i] ** 2
        target[row] = (eps - 1) / (eps + 2) * 3 * structures[i].volume / (4 * np.pi)
    alpha, _ = nnls(counts, target)
    return {s: round(float(a), 6) for s, a in zip(symbols, alpha)}


def fit_model(structures: Sequence[Structure], n: np.ndarray, descriptor_rows: np.ndarray | None = None,
              seeds: Sequence[int] = SEEDS, rounds: int = ROUNDS) -> DescriptorDielectricModel:
    """Fit α and the LightGBM ensemble (ln n, L1) on these rows; returns a ready model.

    Args:
        structures: training structures.
        n: their refractive indices.
        descriptor_rows: ``descriptor_matrix(structures)`` if already computed.
        seeds: one booster per seed.
        rounds: boosting rounds per booster.
    """
    import lightgbm

    if descriptor_rows is None:
        descriptor_rows = descriptor_matrix(structures)
    polarizability = fit_polarizabilities(structures, n)
    features = np.hstack([descriptor_rows, np.vstack([lorentz_lorenz(s, polarizability) for s in structures])])
    boosters = []
    for seed in seeds:
        dataset = lightgbm.Dataset(features, np.log(n), feature_name=list(FEATURE_NAMES), free_raw_data=False)
        boosters.append(lightgbm.train({**LIGHTGBM_PARAMS, "seed": seed}, dataset, num_boost_round=rounds))
    elements = sorted({el.symbol for s in structures for el in s.composition.elements})
    meta = {"label": f"LightGBM×{len(seeds)} on descriptors ({DATASET})", "elements": elements,
            "polarizability_A3": polarizability, "feature_version": FEATURE_VERSION}
    return DescriptorDielectricModel(boosters, meta)


def train_and_save(out: str | Path | None = None, extra_meta: dict | None = None,
                   log: Callable[[str], None] = print,
                   data: tuple[list[Structure], np.ndarray, np.ndarray] | None = None) -> Path:
    """Train on all of matbench_dielectric and write the model folder. Returns it.

    Args:
        out: model folder (default ``checkpoints/dielectric``).
        extra_meta: more keys for ``dielectric.json`` (e.g. the cross-validation MAE).
        log: progress lines.
        data: (structures, n, descriptor_matrix(structures)) when the caller has them already.
    """
    start = time.perf_counter()
    if data is None:
        structures, n = load_matbench_dielectric()
        log(f"{DATASET}: {len(structures)} structures; computing descriptors")
        rows = descriptor_matrix(structures, progress=lambda d, t: log(f"  descriptors {d}/{t}"))
    else:
        structures, n, rows = data
    log(f"training {len(SEEDS)} boosters × {ROUNDS} rounds")
    model = fit_model(structures, n, rows)
    meta = {**model.meta, "data": f"{DATASET} ({len(structures)} rows, all)", "lightgbm_params": LIGHTGBM_PARAMS,
            "rounds": ROUNDS, "seeds": list(SEEDS), **(extra_meta or {})}
    folder = save_descriptor_model(out or default_model_dir(), model.boosters, meta)
    log(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(default_model_dir()), help="model folder to write")
    args = parser.parse_args(argv)
    train_and_save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
