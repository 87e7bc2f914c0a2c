"""Do the spreads predict the errors? Calibration of ``core.scoring.uncertainty`` on held-out data.

    nice -n 10 .venv/bin/python bench/uncertainty.py [--folds 0 1 2 3 4] [--per-file 80] [--committee m3gnet chgnet sevennet]

* **ε_elec**: matbench_dielectric (DFPT n, ε = n²), matbench's KFold (5 splits, seed 18012019). For each
  chosen test fold the shipped recipe (``core.scoring.dielectric_train.fit_model``: α fit + 3 seeded
  LightGBM boosters, 1200 rounds) is fitted on the other four folds; each test row gets the members' ε,
  their sample std (the spread) and the error of the ensemble prediction against DFPT.
* **E_hull**: Materials Project entries of the two Kind A hull files of ``../shared/data/hulls``
  (Na-Fe-P-O, Li-Co-Ni-O; a seeded sample of entries with ≤ 24 sites per file); every committee MLIP
  computes the static energy of the DFT structure and places it on that file's DFT hull
  (``core.scoring.uncertainty.committee_e_above_hull`` with the file as reference); error = committee
  mean − stored DFT E_hull.

Reported per quantity: Spearman ρ between spread and |error|; the fraction of rows with |error| below
1 and 2 raw spreads; the RMS ratio RMS(error) / RMS(spread); and the scale that turns the spread into a
calibrated σ (``SPREAD_SCALE``): the 68th percentile of |error| / spread, with the coverage it gives at 2σ
and, fitted on a random half of the rows, at 1σ and 2σ on the other half. The plot bins rows by spread
(equal-count quantile bins) and draws the 68th percentile of |error| against the mean spread. Member
predictions are cached (``cache_dir()/bench/uncertainty_*.json``), so a rerun only redraws. Writes
``bench/uncertainty.md`` and ``bench/uncertainty.png``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import settings  # noqa: E402

HULL_FILES = ("Na-Fe-P-O.json.gz", "Li-Co-Ni-O.json.gz")
MAX_SITES = 24
BINS = 8


def cache(name: str) -> Path:
    return settings.cache_dir() / "bench" / f"uncertainty_{name}.json"


# ------------------------------------------------------------------------------------------------ ε_elec
def dielectric_rows(folds: list[int], log) -> dict:
    """Per test row: DFPT ε, ensemble ε (model prediction), members' ε; fitted on the other folds."""
    from sklearn.model_selection import KFold

    from core.scoring.dielectric_train import MATBENCH_SEED, descriptor_matrix, fit_model
    from core.scoring.references.training import load_matbench_dielectric
    from core.scoring.uncertainty import dielectric_members

    path = cache("dielectric")
    saved = json.loads(path.read_text()) if path.is_file() else {}
    todo = [f for f in folds if str(f) not in saved]
    if todo:
        structures, n = load_matbench_dielectric()
        log(f"descriptors of {len(structures)} structures")
        start = time.perf_counter()
        rows = descriptor_matrix(structures)
        log(f"  {time.perf_counter() - start:.0f} s")
        splits = list(KFold(n_splits=5, shuffle=True, random_state=MATBENCH_SEED).split(rows))
        for fold in todo:
            train, test = splits[fold]
            start = time.perf_counter()
            model = fit_model([structures[i] for i in train], n[train], rows[train])
            members = dielectric_members([structures[i] for i in test], model)
            saved[str(fold)] = {"eps_true": (n[test] ** 2).tolist(),
                                "members": [m.tolist() if not isinstance(m, BaseException) else None for m in members]}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved))
            log(f"fold {fold}: {len(test)} test rows, {time.perf_counter() - start:.0f} s")
    true, members = [], []
    for fold in folds:
        for t, m in zip(saved[str(fold)]["eps_true"], saved[str(fold)]["members"]):
            if m is not None:
                true.append(t)
                members.append(m)
    members = np.array(members)
    prediction = np.exp(np.mean(np.log(members), axis=1))
    return {"true": np.array(true), "pred": prediction, "spread": np.std(members, axis=1, ddof=1),
            "members": members.shape[1]}


# ------------------------------------------------------------------------------------------------ E_hull
def hull_sample(path: Path, count: int, seed: int = 0) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        raw = [d for d in json.load(fh) if sum(d["composition"].values()) <= MAX_SITES]
    rng = np.random.default_rng(seed)
    return [raw[i] for i in sorted(rng.permutation(len(raw))[:count])]


def hull_rows(per_file: int, committee: list[str], log) -> dict:
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from core.scoring.hull import load_hull_reference
    from core.scoring.uncertainty import committee_e_above_hull

    path = cache("hull")
    saved = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{per_file}:{','.join(committee)}"
    if key not in saved:
        out = {"true": [], "members": {}, "formula": []}
        for name in HULL_FILES:
            file = settings.data_dir() / "hulls" / name
            items = hull_sample(file, per_file)
            structures = [ComputedStructureEntry.from_dict(d).structure for d in items]
            start = time.perf_counter()
            frame = committee_e_above_hull(structures, committee, hull=lambda mlip, f=file: load_hull_reference(f, mlip),
                                           on_member=lambda m, why: log(f"  {name} {m}: {why or 'done'}"))
            log(f"{name}: {len(items)} structures, {time.perf_counter() - start:.0f} s")
            out["true"] += [d["e_above_hull"] for d in items]
            out["formula"] += [s.composition.reduced_formula for s in structures]
            for column in frame.columns:
                if column.startswith("e_above_hull_") and column not in ("e_above_hull_mean", "e_above_hull_std", "e_above_hull_n"):
                    out["members"].setdefault(column.removeprefix("e_above_hull_"), []).extend(frame[column].tolist())
        saved[key] = out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved))
    data = saved[key]
    members = np.array(list(data["members"].values()), dtype=float).T     # (rows, members)
    keep = np.all(np.isfinite(members), axis=1)
    return {"true": np.array(data["true"])[keep], "pred": members[keep].mean(axis=1),
            "spread": members[keep].std(axis=1, ddof=1), "members": list(data["members"]),
            "member_mae": {m: float(np.nanmean(np.abs(np.array(v) - np.array(data["true"]))))
                           for m, v in data["members"].items()},
            "dropped": int((~keep).sum())}


# ------------------------------------------------------------------------------------------------ statistics
def calibration(true: np.ndarray, pred: np.ndarray, spread: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    error = pred - true
    ratio = np.abs(error) / np.where(spread > 0, spread, np.nan)

    def coverage_scale(rows: np.ndarray) -> float:
        # 68 % of |error| within scale × spread: robust to the heavy tails that dominate RMS
        return float(np.nanquantile(ratio[rows], 0.6827))

    scale = coverage_scale(np.arange(true.size))
    sigma = scale * spread
    # honesty check: the scale fitted on a random half, coverage measured on the other half
    half = np.random.default_rng(0).permutation(true.size)
    fit, test = half[: true.size // 2], half[true.size // 2:]
    split_sigma = coverage_scale(fit) * spread[test]
    order = np.argsort(spread)
    bins = [b for b in np.array_split(order, BINS) if b.size]
    return {
        "n": int(true.size), "mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mean_spread": float(np.mean(spread)), "rms_spread": float(np.sqrt(np.mean(spread ** 2))),
        "spearman": float(spearmanr(spread, np.abs(error)).statistic),
        "within_1_raw": float(np.mean(np.abs(error) < spread)), "within_2_raw": float(np.mean(np.abs(error) < 2 * spread)),
        "scale": scale, "scale_rms": float(np.sqrt(np.mean(error ** 2) / np.mean(spread ** 2))),
        "within_1": float(np.mean(np.abs(error) < sigma)), "within_2": float(np.mean(np.abs(error) < 2 * sigma)),
        "within_1_split": float(np.mean(np.abs(error[test]) < split_sigma)),
        "within_2_split": float(np.mean(np.abs(error[test]) < 2 * split_sigma)),
        # per spread bin: mean spread and the 68th percentile of |error| (what a calibrated σ should equal)
        "bins": [(float(np.mean(spread[b])), float(np.quantile(np.abs(error[b]), 0.6827)), int(b.size)) for b in bins],
    }


def plot(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.4))
    for ax, (title, (stats, unit)) in zip(np.atleast_1d(axes), results.items()):
        x, y, _ = np.array(stats["bins"]).T
        top = x.max() * 1.1
        ax.plot([0, top], [0, top], color="#888", ls="--", lw=1, label="σ = spread")
        ax.plot([0, top], [0, top * stats["scale"]], color="#c44e52", ls=":", lw=1,
                label=f"σ = {stats['scale']:.2f} × spread (68 % coverage)")
        ax.plot(x, y, "o-", color="#1f2d5c", label=f"{BINS} spread quantile bins")
        ax.set_xlabel(f"mean committee / ensemble spread in bin ({unit})")
        ax.set_ylabel(f"68th percentile of |error| vs DFT ({unit})")
        ax.set_title(f"{title}: n = {stats['n']}, Spearman ρ = {stats['spearman']:.2f}", fontsize=10)
        ax.set_xlim(0, top)
        ax.set_ylim(0, max(top * stats["scale"], y.max()) * 1.05)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_markdown(results: dict[str, tuple[dict, str]], notes: dict, out: Path) -> None:
    lines = [
        "# Uncertainty calibration: do the spreads predict the errors?", "",
        f"Written by `bench/uncertainty.py` (last run {notes['when']}, CPU, 2 cores shared with other jobs, load "
        f"average {notes['load']}). Method in the script's docstring; code in `core/scoring/uncertainty.py`.", "",
        f"- **ε_elec**: matbench_dielectric test folds {notes['folds']} (each fitted on the other four folds with the "
        f"shipped recipe, {notes['eps_members']} seeded LightGBM members); ε = n², error of the ensemble prediction vs DFPT.",
        f"- **E_hull**: committee {', '.join(notes['committee'])} on {notes['per_file']} sampled MP entries "
        f"(≤ {MAX_SITES} sites) from each of {', '.join(HULL_FILES)}, static energies of the DFT structures on that "
        f"file's DFT hull; error = committee mean − stored DFT E_hull (eV/atom). "
        f"Subsampled to keep the run within ~20 min on 2 shared cores; {notes['hull_dropped']} rows where a member failed are left out.",
        "- Cost of an uncached run here: descriptors of all 4,764 rows ≈ 30 s, one fold fit + member predictions ≈ 25-55 s, "
        "the committee on 80 structures ≈ 1-3 min per file (reference hulls included); ≈ 8 min in all. "
        "Reruns reuse the cached member predictions.",
        "",
        "| quantity | rows | MAE | RMSE | mean spread | Spearman ρ(spread, abs error) | within 1 spread | within 2 spreads | RMSE / RMS spread | scale (68 % coverage) | within 2σ (scaled) | held-out half: within 1σ / 2σ |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for title, (s, unit) in results.items():
        lines.append(f"| {title} ({unit}) | {s['n']} | {s['mae']:.3f} | {s['rmse']:.3f} | {s['mean_spread']:.3f} | "
                     f"{s['spearman']:.2f} | {s['within_1_raw']:.0%} | {s['within_2_raw']:.0%} | {s['scale_rms']:.2f} | "
                     f"**{s['scale']:.2f}** | {s['within_2']:.0%} | {s['within_1_split']:.0%} / {s['within_2_split']:.0%} |")
    lines += ["", "A calibrated Gaussian σ has 68 % of errors within 1σ and 95 % within 2σ. `scale` is the 68th "
              "percentile of abs(error) / spread, so σ = scale × spread covers 68 % of the errors by construction; "
              "`within 2σ` then shows how heavy the tail is (a Gaussian gives 95 %). The RMS ratio is given for "
              "comparison: a few huge errors (metal-like DFPT ε up to ~3900) dominate it. "
              "`core.scoring.uncertainty.SPREAD_SCALE` holds the coverage scales.", ""]
    if notes.get("member_mae"):
        lines += ["E_hull MAE of each committee member on the same rows (eV/atom): " +
                  ", ".join(f"{m} {v:.3f}" for m, v in notes["member_mae"].items()) + ".", ""]
    lines += ["Binned (rows sorted by spread, equal-count bins): mean spread → 68th percentile of abs(error) "
              "(a calibrated σ = scale × spread would follow the dotted line of the plot)", ""]
    for title, (s, unit) in results.items():
        lines.append(f"- {title}: " + "; ".join(f"{x:.3g} → {y:.3g}" for x, y, _ in s["bins"]) + f" ({unit})")
    lines += ["", "![calibration](uncertainty.png)", "", "## Reading", "", notes["reading"], ""]
    out.write_text("\n".join(lines))


def reading(results: dict[str, tuple[dict, str]]) -> str:
    parts = []
    for title, (s, _) in results.items():
        ranks = "ranks errors well" if s["spearman"] > 0.5 else "ranks errors moderately" if s["spearman"] > 0.25 else "ranks errors weakly"
        size = "under-states" if s["scale"] > 1.2 else "over-states" if s["scale"] < 0.8 else "roughly matches"
        parts.append(f"{title}: the spread {ranks} (ρ = {s['spearman']:.2f}) and {size} their size "
                     f"(raw spread covers {s['within_1_raw']:.0%} of errors at 1×); scaled by {s['scale']:.2f} it covers "
                     f"{s['within_1']:.0%} at 1σ and {s['within_2']:.0%} at 2σ (a Gaussian: 68 %, 95 %; "
                     f"fitted on one random half, {s['within_1_split']:.0%} / {s['within_2_split']:.0%} on the other).")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="matbench test folds (0-4)")
    parser.add_argument("--per-file", type=int, default=80, help="MP entries sampled per hull file")
    parser.add_argument("--committee", nargs="+", default=["m3gnet", "chgnet", "sevennet"])
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    from bench.scoring import limit_threads

    limit_threads(1)
    warnings.filterwarnings("ignore")

    def log(text: str) -> None:
        print(text, flush=True)

    eps = dielectric_rows(args.folds, log)
    hull = hull_rows(args.per_file, args.committee, log)
    results = {"ε_elec": (calibration(eps["true"], eps["pred"], eps["spread"]), "dimensionless"),
               "E_hull": (calibration(hull["true"], hull["pred"], hull["spread"]), "eV/atom")}
    out = Path(args.out)
    plot(results, out.with_suffix(".png"))
    notes = {"when": time.strftime("%Y-%m-%d %H:%M"), "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
             "folds": args.folds, "eps_members": eps["members"], "committee": hull["members"], "per_file": args.per_file,
             "hull_dropped": hull["dropped"], "member_mae": hull["member_mae"], "reading": reading(results)}
    write_markdown(results, notes, out)
    for title, (s, _) in results.items():
        log(f"{title}: scale {s['scale']:.3f}, spearman {s['spearman']:.3f}, within1 {s['within_1']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
