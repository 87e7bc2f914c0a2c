"""ε_elec model on the matbench protocol, then the shipped model trained on all rows, and its model card.

    nice -n 10 .venv/bin/python bench/dielectric.py            # 5 folds + final model (≈ 20-25 min, 2 shared cores)
    nice -n 10 .venv/bin/python bench/dielectric.py --folds 0  # one fold only, nothing shipped

matbench_dielectric (4,764 Materials Project structures, target: refractive index n), split as
matbench does: ``sklearn.model_selection.KFold(n_splits=5, shuffle=True, random_state=18012019)`` over
the file's row order. Each fold fits α and the boosters on the four other folds only (no early
stopping, fixed rounds) and predicts the test fold. Reports n MAE per fold and their mean next to the
public matbench leaderboard, the ε_elec = n² MAE, and prediction throughput. With all folds it then
trains the shipped model on every row (``core.scoring.dielectric_train.train_and_save``) and writes
``checkpoints/dielectric/MODEL_CARD.md`` and ``bench/dielectric.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from core.scoring.dielectric import BOOSTER_FILE, META_FILE, RETRAIN, default_model_dir  # noqa: E402
from core.scoring.dielectric_train import (  # noqa: E402
    DATASET, LIGHTGBM_PARAMS, LL_FIT_MAX_N, MATBENCH_SEED, ROUNDS, SEEDS, data_path, descriptor_matrix, fit_model,
    train_and_save,
)
from core.scoring.references.training import load_matbench_dielectric  # noqa: E402

# matbench v0.1 leaderboard, matbench_dielectric, mean n MAE over the 5 folds
LEADERBOARD = (("MODNet v0.1.12", 0.2711), ("ALIGNN", 0.3449), ("CGCNN v2019", 0.5988))
PAPER_EPS_MAE = ("AnisoNet (CrystalFormer-RL paper, its own MP split)", 0.297)
TARGET_N_MAE = 0.30


def run_folds(structures, n, rows, learned, folds: list[int]) -> list[dict]:
    from sklearn.model_selection import KFold

    splits = list(KFold(n_splits=5, shuffle=True, random_state=MATBENCH_SEED).split(rows))
    results = []
    for k in folds:
        start = time.perf_counter()
        train, test = splits[k]
        model = fit_model([structures[i] for i in train], n[train], rows[train], learned[train])
        features = model.assemble([structures[i] for i in test], rows[test], learned[test])
        pred = np.maximum(np.exp(model.predict_log_n(features)), 1.0)
        # the public API on a few test rows must give the same numbers as the matrix path
        api = model.predict([structures[i] for i in test[:20]])
        assert np.allclose(np.sqrt(api), pred[:20], rtol=1e-9), "predict() disagrees with the feature matrix"
        true = n[test]
        typical = true < LL_FIT_MAX_N
        results.append({
            "fold": k, "n_train": len(train), "n_test": len(test), "seconds": time.perf_counter() - start,
            "n_mae": float(np.mean(np.abs(pred - true))), "n_median_ae": float(np.median(np.abs(pred - true))),
            "eps_mae": float(np.mean(np.abs(pred ** 2 - true ** 2))),
            "eps_mae_typical": float(np.mean(np.abs(pred[typical] ** 2 - true[typical] ** 2))),
            "typical_fraction": float(typical.mean()),
        })
        print(f"fold {k}: n MAE {results[-1]['n_mae']:.4f}, ε MAE {results[-1]['eps_mae']:.3f} "
              f"({results[-1]['seconds']:.0f} s)", flush=True)
    return results


def throughput(structures, repeats: int = 1, folder: Path | None = None) -> float:
    """Structures per second of ``load_dielectric_model(folder).predict`` (features + trees), one batch."""
    from core.scoring.dielectric import load_dielectric_model

    model = load_dielectric_model(folder)
    model.predict(structures[:10])
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict(structures)
    return repeats * len(structures) / (time.perf_counter() - start)


def table(results: list[dict]) -> str:
    lines = ["| fold | train / test rows | n MAE | n median AE | ε MAE (all) | ε MAE (n < 4) | fit + predict (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['fold']} | {r['n_train']} / {r['n_test']} | {r['n_mae']:.4f} | {r['n_median_ae']:.4f} | "
                     f"{r['eps_mae']:.3f} | {r['eps_mae_typical']:.3f} ({100 * r['typical_fraction']:.0f} % of rows) | "
                     f"{r['seconds']:.0f} |")
    mean = {key: float(np.mean([r[key] for r in results])) for key in ("n_mae", "n_median_ae", "eps_mae", "eps_mae_typical")}
    lines.append(f"| **mean** | | **{mean['n_mae']:.4f}** | {mean['n_median_ae']:.4f} | {mean['eps_mae']:.3f} | "
                 f"{mean['eps_mae_typical']:.3f} | |")
    return "\n".join(lines)


def comparison(results: list[dict]) -> str:
    ours = float(np.mean([r["n_mae"] for r in results]))
    rows = [(f"**this model** (descriptors + Lorentz–Lorenz α + Penn + MEGNet readouts → LightGBM×{len(SEEDS)}, L1 on ln n)", ours), *LEADERBOARD]
    lines = ["| model | n MAE (5-fold mean) |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(rows, key=lambda r: r[1])]
    verdict = "met" if ours <= TARGET_N_MAE else "NOT met"
    record = "beats" if ours < LEADERBOARD[0][1] else "does not beat"
    lines.append(f"\nTarget n MAE ≤ {TARGET_N_MAE} (ahead of ALIGNN): **{verdict}**; this {record} the record "
                 f"({LEADERBOARD[0][0]}, {LEADERBOARD[0][1]}).")
    return "\n".join(lines)


def eps_note(results: list[dict]) -> str:
    eps = float(np.mean([r["eps_mae"] for r in results]))
    typical = float(np.mean([r["eps_mae_typical"] for r in results]))
    return (f"ε_elec = n² MAE over the same folds: **{eps:.3f}** on all rows, {typical:.3f} on rows with n < {LL_FIT_MAX_N:g} "
            f"(ε < {LL_FIT_MAX_N ** 2:g}). The paper quotes {PAPER_EPS_MAE[1]} for {PAPER_EPS_MAE[0]}: a different split "
            "and data filter, so not directly comparable; squaring makes the few n > 5 rows (metal-like DFPT values "
            "up to n = 62, ε ≈ 3,900) dominate the all-rows number.")


def write_reports(results: list[dict], timings: dict, folder: Path, speed: float,
                  report: Path = REPO / "bench" / "dielectric.md") -> None:
    sizes = "\n".join(f"- `{p.name}`: {p.stat().st_size / 1e6:.2f} MB" for p in sorted(folder.iterdir())
                      if p.name in (META_FILE, BOOSTER_FILE))
    params = ", ".join(f"{k}={v}" for k, v in LIGHTGBM_PARAMS.items())
    body = f"""## Benchmark: matbench protocol

Data: {DATASET}, {timings['rows']} Materials Project structures, target the refractive index n
(DFPT, PBE), from `crystal_toolkit/apps/examples/{data_path().name}` in the crystal-toolkit wheel (row order
= matbench order). Split: `sklearn.model_selection.KFold(n_splits=5, shuffle=True, random_state={MATBENCH_SEED})`.
Each fold is fitted on the other four folds only (α fit and boosters; fixed {ROUNDS} rounds, no early stopping),
then predicts its test fold.

{table(results)}

{comparison(results)}

{eps_note(results)}

Wall time on the shared 2-core CPU (`nice -n 10`): descriptors of all rows {timings['descriptors']:.0f} s,
5 folds {timings['folds']:.0f} s, final training {timings['final']:.0f} s, total {timings['total']:.0f} s.
Prediction throughput of `load_dielectric_model().predict` (descriptors + trees, one batch of
{timings['speed_rows']} structures): **{speed:.0f} structures/s**.
"""
    card = f"""# ε_elec model (refractive index n → ε_elec = n²)

Used by the scoring engine for the figure of merit FoM = ε_elec × E_g (eV).
Loaded by `core.scoring.dielectric.load_dielectric_model()`; code and descriptors are documented in
`core/scoring/dielectric.py`.

## Model
- Descriptors of one structure ({len(__import__('core.scoring.dielectric', fromlist=['x']).FEATURE_NAMES)} numbers, a few ms): Magpie element-property statistics of the
  composition (smact's table, plus first ionisation energy and electron affinity), stoichiometry,
  valence-orbital fractions, ionic character; volume per atom, density, packing fraction, nearest-neighbour
  distances, coordination numbers, bond-length ratios, electronegativity difference across bonds, space group;
  and a Lorentz–Lorenz (Clausius–Mossotti) estimate n_LL from per-element electronic polarisabilities α (Å³)
  fitted by non-negative least squares to the training rows with n < {LL_FIT_MAX_N:g} (stored in `{META_FILE}`).
- Regressor: {len(SEEDS)} LightGBM boosters (seeds {', '.join(map(str, SEEDS))}), {ROUNDS} rounds each, L1 loss on ln n
  (the metric is MAE and n is long-tailed); prediction = exp(mean ln n), clipped to n ≥ 1, returned as ε = n².
  Parameters: {params}.
- Why this and not a GNN: measured, not assumed. In a prototype run (one booster, 800 rounds, no Lorentz–Lorenz
  pair) on folds 0–1, adding a frozen pretrained CHGNet embedding (64-d crystal feature + max/std-pooled atom
  features + energy, 193 numbers) to these descriptors made the n MAE worse (0.192/0.266 vs 0.185/0.258 without),
  and it costs ≈ 65–220 ms/structure on this CPU (18 min for the 4,764 rows under load) where the descriptors take
  a few ms. Training a matgl GNN from scratch for five folds does not fit the 2-core budget, and the leaderboard's
  GNNs (ALIGNN 0.34, CGCNN 0.60) trail descriptor models on this task. The L1 loss matters most: the same
  prototype with a squared loss on n scored 0.50–0.58 on folds 0–1 (long tail), 0.23–0.31 on ln n.
- Elements: the {{elements}} elements present in {DATASET}; any other element (e.g. noble gases, Pm, Po, Np, Pu)
  gives a per-structure error "element X not covered".

{body}
## Files
{sizes}

LightGBM text models (gzip, no pickle) + JSON metadata. Trained on all {timings['rows']} rows.
Training is deterministic (one thread, fixed seeds): a retrain reproduces the trees byte for byte.

## Retrain
    nice -n 10 {RETRAIN}          # the shipped model only (≈ {timings['final'] / 60:.0f} min)
    nice -n 10 .venv/bin/python bench/dielectric.py    # 5-fold benchmark + shipped model + this card

## Use
```python
from core.scoring.dielectric import load_dielectric_model
model = load_dielectric_model()                 # or a folder: our format, or a matgl property model
eps = model.predict(structures)                 # list of ε_elec floats, or the exception of that structure
load_dielectric_model("my_matgl_model", target="n")   # a matgl model predicting n (or "eps")
```

## Limits
- Targets are PBE DFPT values: they overestimate experiment for small-gap materials (Si: DFT n ≈ 3.6, exp. 3.42).
- Trained on relaxed MP structures; generated, unrelaxed structures with unusual volumes are extrapolation.
- The L1 fit predicts the typical value: rare metal-like rows with n ≫ 5 are under-predicted by design.
"""
    import json

    meta = json.loads((folder / META_FILE).read_text())
    (folder / "MODEL_CARD.md").write_text(card.replace("{elements}", str(len(meta["elements"]))))
    report.write_text(
        f"# ε_elec model benchmark\n\nWritten by `bench/dielectric.py`; model card: "
        f"`checkpoints/dielectric/MODEL_CARD.md`.\n\n{body}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=default_model_dir(), help="folder of the shipped model")
    parser.add_argument("--report", type=Path, default=REPO / "bench" / "dielectric.md",
                        help="benchmark page to (over)write; the per-fold results go next to it as .json")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    structures, n = load_matbench_dielectric()
    t1 = time.perf_counter()
    from dielectric_grouped import cached_features

    rows, learned = cached_features(structures)
    timings = {"rows": len(structures), "descriptors": time.perf_counter() - t1}
    print(f"descriptors: {rows.shape} in {timings['descriptors']:.0f} s", flush=True)
    t2 = time.perf_counter()
    results = run_folds(structures, n, rows, learned, args.folds)
    timings["folds"] = time.perf_counter() - t2
    print(table(results), comparison(results), eps_note(results), sep="\n\n", flush=True)
    if sorted(args.folds) != [0, 1, 2, 3, 4]:
        print("(not all folds: nothing shipped, no report written)")
        return 0
    t3 = time.perf_counter()
    mean = float(np.mean([r["n_mae"] for r in results]))
    folder = train_and_save(args.out, extra_meta={"cv_n_mae": round(mean, 4),
                                                  "cv_fold_n_mae": [round(r["n_mae"], 4) for r in results]},
                            data=(structures, n, rows, learned))
    timings["final"] = time.perf_counter() - t3
    timings["speed_rows"] = 500
    timings["total"] = time.perf_counter() - t0
    speed = throughput(structures[:500], folder=folder)
    import json

    args.report.with_suffix(".json").write_text(json.dumps({"folds": results, "timings": timings,
                                                           "structures_per_s": speed}, indent=1))
    write_reports(results, timings, folder, speed, args.report)
    print(f"wrote {folder / 'MODEL_CARD.md'} and {args.report}; {speed:.0f} structures/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
