"""Grouped (out-of-chemistry) evaluation of the ε_elec model on matbench_dielectric (issue #20).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/dielectric_grouped.py                 # full, ≈ 15-20 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/dielectric_grouped.py --rows 400 --rounds 50   # smoke test

Splits (each ``sklearn.model_selection.GroupKFold(n_splits=5)``, so a whole group is in one test fold):

* ``chemsys``: the chemical system (sorted element set, e.g. ``Cs-F-Li-Lu``): no test compound shares its
  element set with any training compound.
* ``anion``: the anion family, the most electronegative element (Pauling) of the composition (``O``, ``F``,
  ``S``, ...): whole anion chemistries are held out.

Reports, per split, for ε = n² (not only n): MAE on all rows, on rows with n < 4 (ε < 16, the FoM range),
and per ε bin (1-4, 4-9, 9-16, ≥ 16), plus the n MAE, and the calibrated 1σ coverage: the share of
test rows with |ε_pred − ε_DFT| ≤ σ, σ = spread_scale × std of the boosters' ε, spread_scale fitted by
``fit_model`` on the training folds only. The model is ``core.scoring.dielectric_train.fit_model`` (the
shipped recipe), fitted on the training folds only. Features are cached in ``.cache/dielectric/``.

The "before" numbers (the recipe shipped before issue #20: descriptors + Lorentz–Lorenz, 3 boosters on
all rows) are kept in the JSON under ``before``; a run writes ``results`` for today's code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.scoring.dielectric_train import ROUNDS, descriptor_matrix, fit_model, learned_matrix  # noqa: E402
from core.scoring.references.training import load_matbench_dielectric  # noqa: E402

EPS_BINS = ((1.0, 4.0), (4.0, 9.0), (9.0, 16.0), (16.0, np.inf))   # ε = n² ranges (dimensionless)


def chemsys_groups(structures) -> np.ndarray:
    """Chemical-system label per structure (sorted element symbols joined by '-')."""
    return np.array(["-".join(sorted(el.symbol for el in s.composition.elements)) for s in structures])


def anion_groups(structures) -> np.ndarray:
    """Anion-family label per structure: its most electronegative element (Pauling χ; ties by symbol)."""
    def anion(s) -> str:
        return max(s.composition.elements, key=lambda el: (el.X if el.X == el.X else 0.0, el.symbol)).symbol
    return np.array([anion(s) for s in structures])


def eps_metrics(pred_n: np.ndarray, true_n: np.ndarray) -> dict:
    """n and ε = n² errors (dimensionless), overall, on n < 4 and per ε bin of the DFT value."""
    pe, te = pred_n ** 2, true_n ** 2
    out = {"rows": int(len(true_n)), "n_mae": float(np.mean(np.abs(pred_n - true_n))),
           "eps_mae": float(np.mean(np.abs(pe - te))),
           "eps_mae_n_lt_4": float(np.mean(np.abs(pe - te)[true_n < 4.0])),
           "eps_bias_n_lt_4": float(np.mean((pe - te)[true_n < 4.0]))}
    for lo, hi in EPS_BINS:
        m = (te >= lo) & (te < hi)
        out[f"eps_mae_{lo:g}-{hi:g}"] = float(np.mean(np.abs(pe - te)[m])) if m.any() else float("nan")
        out[f"rows_{lo:g}-{hi:g}"] = int(m.sum())
    return out


CACHE = REPO / ".cache" / "dielectric"


def cached_features(structures, tag: str = "matbench") -> tuple[np.ndarray, np.ndarray]:
    """(descriptor_matrix, learned_matrix) of ``structures``, computed once and kept in ``.cache/dielectric``."""
    from core.scoring.dielectric import FEATURE_VERSION

    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for name, make in (("descriptors", descriptor_matrix), ("learned", learned_matrix)):
        path = CACHE / f"{tag}-{len(structures)}-{name}-v{FEATURE_VERSION}.npy"
        if not path.exists():
            start = time.perf_counter()
            np.save(path, make(structures))
            print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        out.append(np.load(path))
    return out[0], out[1]


def oof_predictions(structures, n, rows, learned, splits, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold n and calibrated σ_ε (dimensionless) of ``fit_model`` over ``splits`` (train, test)."""
    pred, sigma = np.full(len(n), np.nan), np.full(len(n), np.nan)
    for train, test in splits:
        model = fit_model([structures[i] for i in train], n[train], rows[train], learned[train], rounds=rounds)
        features = model.assemble([structures[i] for i in test], rows[test], learned[test])
        log_n = np.vstack([b.predict(features) for b in model.boosters])
        pred[test] = np.maximum(np.exp(log_n.mean(axis=0)), 1.0)
        eps_members = np.maximum(np.exp(log_n), 1.0) ** 2
        sigma[test] = (model.spread_scale or np.nan) * np.std(eps_members, axis=0, ddof=1)
    return pred, sigma


def coverage_metrics(pred_n: np.ndarray, sigma: np.ndarray, true_n: np.ndarray) -> dict:
    """Share of rows whose ε error is within the calibrated 1σ (all rows, and n < 4)."""
    inside = np.abs(pred_n ** 2 - true_n ** 2) <= sigma
    return {"coverage_1sigma": float(inside.mean()), "coverage_1sigma_n_lt_4": float(inside[true_n < 4.0].mean()),
            "sigma_median": float(np.median(sigma))}


def run_split(structures, n, rows, learned, groups, rounds: int) -> tuple[dict, np.ndarray]:
    """Out-of-fold metrics of the shipped recipe under GroupKFold(5) on ``groups``."""
    from sklearn.model_selection import GroupKFold

    pred, sigma = oof_predictions(structures, n, rows, learned, GroupKFold(n_splits=5).split(rows, n, groups), rounds)
    return {**eps_metrics(pred, n), **coverage_metrics(pred, sigma, n)}, pred


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="use only the first N rows (smoke test)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--splits", default="chemsys,anion")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "dielectric_grouped.json")
    args = parser.parse_args(argv)
    structures, n = load_matbench_dielectric()
    if args.rows:
        structures, n = structures[:args.rows], n[:args.rows]
    rows, learned = cached_features(structures)
    results = {}
    makers = {"chemsys": chemsys_groups, "anion": anion_groups}
    for name in args.splits.split(","):
        groups = makers[name](structures)
        t = time.perf_counter()
        results[name], _ = run_split(structures, n, rows, learned, groups, args.rounds)
        results[name]["seconds"] = time.perf_counter() - t
        print(name, json.dumps(results[name]), flush=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    before = previous.get("before") or (previous if previous.get("model") == "today (fit_model)" else None)
    record = {"rows": len(n), "rounds": args.rounds, "model": "fit_model (descriptors + Lorentz-Lorenz + Penn + "
              "MEGNet readouts, chemistry-bagged boosters)", "results": results}
    if before and not args.rows:
        record["before"] = {k: before[k] for k in ("rows", "rounds", "model", "results")}
    if not args.rows:
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
