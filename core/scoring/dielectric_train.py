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

from core.errors import ScoringError
from core.scoring.references.matbench import matbench_dielectric_path
from core.scoring.references.training import load_matbench_dielectric
from core.scoring.dielectric import (
    DescriptorDielectricModel, FEATURE_NAMES, FEATURE_VERSION, default_model_dir, descriptors, fit_penn,
    learned_features_model, lorentz_lorenz, save_descriptor_model, valence_electron_density,
)

DATASET = "matbench_dielectric"
MATBENCH_SEED = 18012019        # matbench's KFold random_state
SEEDS = (0, 1, 2, 3, 4)         # one LightGBM booster per seed; the model averages their ln n
GROUP_FRACTION = 0.75           # each booster sees this random fraction of the chemical systems
COVERAGE = 0.68                 # the calibrated σ holds this fraction of out-of-chemistry errors
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


def learned_matrix(structures: Sequence[Structure]) -> np.ndarray:
    """Rows of ``LEARNED_FEATURES`` (MEGNet readouts, CPU; ≈ 10 ms a structure). Raises on a failed row."""
    rows = learned_features_model("cpu").features(list(structures))
    for i, row in enumerate(rows):
        if isinstance(row, Exception):
            raise ScoringError(f"training structure {i}: {row}")
    return np.vstack(rows)


def chemsys(structure: Structure) -> str:
    """Chemical system of a structure: sorted element symbols joined by '-' (e.g. ``Cl-Na``)."""
    return "-".join(sorted(el.symbol for el in structure.composition.elements))


def calibrate_spread(eps_members: np.ndarray, in_bag: np.ndarray, eps_true: np.ndarray,
                     coverage: float = COVERAGE) -> float:
    """Factor k so that |ε_OOB − ε_true| ≤ k · std(ε_OOB members) for ``coverage`` of the training rows.

    Only rows that at least two boosters did not see (their chemical system was out of bag) count:
    there the out-of-bag members' geometric mean and sample std (ddof=1) imitate a prediction for an
    unseen chemistry. Fitted on training rows only.

    Args:
        eps_members: (members, rows) predicted ε of every booster.
        in_bag: (members, rows) True where the booster was trained on that row.
        eps_true: (rows,) DFPT ε.
        coverage: the fraction of rows the calibrated 1σ should hold (0.68 for a Gaussian 1σ).
    """
    ratios = []
    for row in np.flatnonzero((~in_bag).sum(axis=0) >= 2):
        values = eps_members[~in_bag[:, row], row]
        spread = float(np.std(values, ddof=1))
        if spread > 0:
            ratios.append(abs(float(np.exp(np.mean(np.log(values)))) - eps_true[row]) / spread)
    if len(ratios) < 20:
        raise ValueError(f"only {len(ratios)} rows out of bag for two boosters: too few to calibrate")
    return round(float(np.quantile(ratios, coverage)), 4)


def fit_model(structures: Sequence[Structure], n: np.ndarray, descriptor_rows: np.ndarray | None = None,
              learned_rows: np.ndarray | None = None, seeds: Sequence[int] = SEEDS, rounds: int = ROUNDS,
              group_fraction: float = GROUP_FRACTION) -> DescriptorDielectricModel:
    """Fit α, the Penn parameters, the LightGBM ensemble (ln n, L1) and its σ calibration on these rows.

    Each booster is trained on the rows of a random ``group_fraction`` of the chemical systems
    (drawn with its seed), so the boosters disagree where chemistry is new; ``calibrate_spread`` turns
    their spread into a calibrated 1σ using the rows each booster did not see.

    Args:
        structures: training structures.
        n: their refractive indices.
        descriptor_rows: ``descriptor_matrix(structures)`` if already computed.
        learned_rows: ``learned_matrix(structures)`` if already computed.
        seeds: one booster per seed.
        rounds: boosting rounds per booster.
        group_fraction: fraction of chemical systems each booster sees (1.0: all rows, no calibration).
    """
    import lightgbm

    if descriptor_rows is None:
        descriptor_rows = descriptor_matrix(structures)
    if learned_rows is None:
        learned_rows = learned_matrix(structures)
    polarizability = fit_polarizabilities(structures, n)
    density = np.array([valence_electron_density(s) for s in structures])
    typical = n < LL_FIT_MAX_N
    penn = fit_penn(density[typical], learned_rows[typical, 0], n[typical] ** 2)
    elements = sorted({el.symbol for s in structures for el in s.composition.elements})
    meta = {"label": f"LightGBM×{len(seeds)} on descriptors + MEGNet readouts ({DATASET})", "elements": elements,
            "polarizability_A3": polarizability, "penn": penn, "feature_version": FEATURE_VERSION,
            "group_fraction": group_fraction}
    features = DescriptorDielectricModel([], meta).assemble(structures, descriptor_rows, learned_rows)
    groups = np.array([chemsys(s) for s in structures])
    names = np.unique(groups)
    boosters, in_bag = [], []
    for seed in seeds:
        if group_fraction < 1.0:
            chosen = np.random.default_rng(seed).choice(names, max(1, round(group_fraction * len(names))), replace=False)
            bag = np.isin(groups, chosen)
        else:
            bag = np.ones(len(n), dtype=bool)
        dataset = lightgbm.Dataset(features[bag], np.log(n[bag]), feature_name=list(FEATURE_NAMES), free_raw_data=False)
        boosters.append(lightgbm.train({**LIGHTGBM_PARAMS, "seed": seed}, dataset, num_boost_round=rounds))
        in_bag.append(bag)
    if group_fraction < 1.0:
        members = np.maximum(np.exp(np.vstack([b.predict(features) for b in boosters])), 1.0) ** 2
        meta["spread_scale"] = calibrate_spread(members, np.vstack(in_bag), n ** 2)
        meta["spread_coverage"] = COVERAGE
    return DescriptorDielectricModel(boosters, meta)


def train_and_save(out: str | Path | None = None, extra_meta: dict | None = None,
                   log: Callable[[str], None] = print,
                   data: tuple[list[Structure], np.ndarray, np.ndarray, np.ndarray] | None = None) -> Path:
    """Train on all of matbench_dielectric and write the model folder. Returns it.

    Args:
        out: model folder (default ``checkpoints/dielectric``).
        extra_meta: more keys for ``dielectric.json`` (e.g. the cross-validation MAE).
        log: progress lines.
        data: (structures, n, descriptor_matrix(structures), learned_matrix(structures)) when the caller has
            them already.
    """
    start = time.perf_counter()
    if data is None:
        structures, n = load_matbench_dielectric()
        log(f"{DATASET}: {len(structures)} structures; computing descriptors")
        rows = descriptor_matrix(structures, progress=lambda d, t: log(f"  descriptors {d}/{t}"))
        log("MEGNet readouts")
        learned = learned_matrix(structures)
    else:
        structures, n, rows, learned = data
    log(f"training {len(SEEDS)} boosters × {ROUNDS} rounds")
    model = fit_model(structures, n, rows, learned)
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
