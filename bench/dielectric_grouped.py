"""Grouped (out-of-chemistry) evaluation of the ε_elec model on matbench_dielectric (issue #20).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/dielectric_grouped.py                 # full, ≈ 15-20 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/dielectric_grouped.py --rows 400 --rounds 50   # smoke test

Splits (each ``sklearn.model_selection.GroupKFold(n_splits=5)``, so a whole group is in one test fold):

* ``chemsys``: the chemical system (sorted element set, e.g. ``Cs-F-Li-Lu``): no test compound shares its
  element set with any training compound.
* ``anion``: the anion family, the most electronegative element (Pauling) of the composition (``O``, ``F``,
  ``S``, ...): whole anion chemistries are held out.

Reports, per split, for ε = n² (not only n): MAE on all rows, on rows with n < 4 (ε < 16, the FoM range),
and per ε bin (1-4, 4-9, 9-16, ≥ 16), plus the n MAE. The model is ``core.scoring.dielectric_train.fit_model``
(today's recipe), fitted on the training folds only.
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

from core.scoring.dielectric import lorentz_lorenz  # noqa: E402
from core.scoring.dielectric_train import ROUNDS, descriptor_matrix, fit_model  # noqa: E402
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


def run_split(structures, n, rows, groups, rounds: int) -> tuple[dict, np.ndarray]:
    """Out-of-fold predictions of today's recipe under GroupKFold(5) on ``groups``."""
    from sklearn.model_selection import GroupKFold

    pred = np.full(len(n), np.nan)
    for train, test in GroupKFold(n_splits=5).split(rows, n, groups):
        model = fit_model([structures[i] for i in train], n[train], rows[train], rounds=rounds)
        ll = np.vstack([lorentz_lorenz(structures[i], model.polarizability) for i in test])
        pred[test] = np.maximum(np.exp(model.predict_log_n(np.hstack([rows[test], ll]))), 1.0)
    return eps_metrics(pred, n), pred


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
    start = time.perf_counter()
    rows = descriptor_matrix(structures)
    print(f"descriptors {time.perf_counter() - start:.0f} s", flush=True)
    results = {}
    makers = {"chemsys": chemsys_groups, "anion": anion_groups}
    for name in args.splits.split(","):
        groups = makers[name](structures)
        t = time.perf_counter()
        results[name], _ = run_split(structures, n, rows, groups, args.rounds)
        results[name]["seconds"] = time.perf_counter() - t
        print(name, json.dumps(results[name]), flush=True)
    args.out.write_text(json.dumps({"rows": len(n), "rounds": args.rounds, "model": "today (fit_model)",
                                    "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
