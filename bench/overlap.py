"""Overlap-aware sampling: how often the shipped models put atoms on top of each other, and what redrawing buys.

    nice -n 10 .venv/bin/python bench/overlap.py training
    nice -n 10 .venv/bin/python bench/overlap.py compare [--n 300] [--models base,rl-ehull] [--no-score]

``training``: the distribution behind ``core.overlap``'s thresholds, over checkpoints/base/training_set.npz:
per crystal, the shortest distance (Å) and the smallest distance / (sum of covalent radii) of any pair.

``compare``: ``--n`` samples per model (space groups drawn from the checkpoint's training distribution,
seed 0), plain and with ``reject_overlaps=True`` (same seed): share with two atoms closer than 1 Å and
0.5 Å (every atom, periodic images and orbit images included), acceptance, sampling time (each mode run
once before timing, so compilation is excluded; other jobs share this machine, so times are the best of
two), and each set scored statically with the default MLIP on the bundled hull (``core.scoring.pipeline``):
median E_hull over the scored rows, share of all samples below 0.1 eV/atom, and the judged-hull
stability rate of ``core.scoring.metrics.summarize``.

Writes ``bench/overlap.md`` (appends a section per run).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).with_suffix(".md")
STABLE_EV = 0.1


def _append(text: str) -> None:
    header = "# Overlap-aware sampling\n\nWritten by `bench/overlap.py`.\n\n"
    previous = OUT.read_text() if OUT.exists() else header
    OUT.write_text(previous.rstrip("\n") + "\n\n" + text + "\n")
    print(text)


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} (other jobs share this machine)"


def training() -> None:
    from ase.data import covalent_radii
    from pymatgen.optimization.neighbors import find_points_in_spheres

    from core import settings
    from core.overlap import FLOOR_A, FRACTION, atoms_of_row, lattice_matrix

    data = np.load(settings.checkpoints_dir() / "base" / "training_set.npz")
    ratios, shortest, with_h = [], [], []
    for b in range(len(data["G"])):
        frac, z = atoms_of_row(data["G"][b], data["W"][b], data["A"][b], data["XYZ"][b])
        m = lattice_matrix(data["L"][b], len(z))
        i, j, _, d = find_points_in_spheres(np.ascontiguousarray(frac @ m), np.ascontiguousarray(frac @ m), r=8.0,
                                            pbc=np.array([1, 1, 1], np.int64), lattice=m, tol=1e-8)
        keep = (i != j) | (d > 1e-8)
        i, j, d = i[keep], j[keep], d[keep]
        r = d / (covalent_radii[z[i]] + covalent_radii[z[j]])
        ratios.append(r.min())
        shortest.append(d.min())
        k = int(np.argmin(d))
        with_h.append(1 in (z[i[k]], z[j[k]]))
    ratios, shortest, with_h = np.array(ratios), np.array(shortest), np.array(with_h)
    q = lambda p: np.quantile(ratios, p)  # noqa: E731
    below1 = shortest < 1.0
    lines = [
        f"## Training set ({len(ratios)} crystals, checkpoints/base/training_set.npz)", "",
        "| measure | value |", "|---|---|",
        f"| shortest distance, minimum | {shortest.min():.3f} Å |",
        f"| crystals with a pair < 0.5 Å / < 0.7 Å / < 1 Å | {(shortest < 0.5).mean():.1%} / {(shortest < 0.7).mean():.1%} / {below1.mean():.1%} |",
        f"| of those < 1 Å, shortest pair involves H | {with_h[below1].mean():.0%} |" if below1.any() else "| – | – |",
        f"| min d / (r_i + r_j): minimum, 0.1 %, 1 %, 5 %, median | {ratios.min():.3f}, {q(0.001):.3f}, {q(0.01):.3f}, {q(0.05):.3f}, {q(0.5):.3f} |",
        *(f"| crystals with a pair below {f:g} × (r_i + r_j) | {(ratios < f).sum()} ({(ratios < f).mean():.2%}) |" for f in (0.6, 0.65, 0.7, 0.75, 0.8)),
        "", f"Rule shipped (`core.overlap`): threshold = max({FLOOR_A} Å, {FRACTION} × (r_i + r_j)); "
            f"it rejects {int(((ratios < FRACTION) | (shortest < FLOOR_A)).sum())} training crystals.",
    ]
    _append("\n".join(lines))


def _distances(arrays: dict) -> np.ndarray:
    from core.overlap import judge_row

    return np.array([judge_row(arrays["G"][b], arrays["L"][b], arrays["XYZ"][b], arrays["A"][b], arrays["W"][b]).min_distance
                     for b in range(len(arrays["G"]))])


def _score(arrays: dict) -> dict:
    from core.sampler import samples_from_arrays
    from core.scoring.metrics import summarize
    from core.scoring.pipeline import score

    samples = samples_from_arrays(arrays)
    structures = [s.structure for s in samples if s.structure is not None]
    t0 = time.perf_counter()
    table = score(structures, hull="bundled", properties=False)
    e = table["e_above_hull"].astype(float)
    summary = summarize(table)
    return {"median": float(np.nanmedian(e)) if e.notna().any() else float("nan"),
            "below": float((e < STABLE_EV).sum() / len(samples)), "scored": int(e.notna().sum()),
            "judged_rate": float(summary.get("stability_rate", float("nan"))),
            "unjudged": float(summary.get("unjudged_share", float("nan"))), "seconds": time.perf_counter() - t0}


def compare(n: int, models: list[str], scoring: bool) -> None:
    from core import settings
    from core.checkpoint import load_checkpoint
    from core.sampler import resolve_spacegroups, sample_arrays

    lines = [f"## Plain vs overlap-aware sampling ({n} samples per model, training space groups, seed 0)", "",
             _machine(), "",
             "| model | mode | min d < 1 Å | min d < 0.5 Å | fit (as drawn / returned) | flagged | crystals drawn per sample "
             "| sampling s (ratio) | median E_hull eV/atom | E_hull < 0.1 (all samples) | judged-hull stable / unjudged |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in models:
        path = Path(name) if Path(name).is_dir() else settings.checkpoints_dir() / name
        ck = load_checkpoint(path)
        G = resolve_spacegroups("train", n, np.random.default_rng(0), ck.meta.get("spacegroup_distribution"))
        results = {}
        for mode, reject in (("plain", False), ("overlap-aware", True)):
            sample_arrays(ck, G, seed=1, reject_overlaps=reject)        # compile every shape this size needs
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                arrays = sample_arrays(ck, G, seed=0, reject_overlaps=reject)
                times.append(time.perf_counter() - t0)
            d = arrays["min_distance"] if reject else _distances(arrays)
            fit = arrays["fits"] if reject else None
            results[mode] = dict(arrays=arrays, d=d, seconds=min(times), fit=fit)
            print(name, mode, min(times), flush=True)
        plain_s = results["plain"]["seconds"]
        for mode, r in results.items():
            a, d = r["arrays"], r["d"]
            if r["fit"] is not None:
                first = float((a["fits"] & (a["lattice_draws"] == 1)).mean())
                fit_text = f"{first:.0%} / {a['fits'].mean():.1%}"
                flagged = str(int((~a["fits"]).sum()))
                draws = f"{a['crystal_draws'].mean():.2f} ({a['lattice_draws'].mean():.1f} lattices)"
            else:
                fit_text, flagged, draws = "–", "–", "1"
            s = _score(a) if scoring else None
            score_text = (f"{s['median']:.2f} | {s['below']:.1%} | {s['judged_rate']:.1%} / {s['unjudged']:.0%}"
                          if s else "– | – | –")
            lines.append(f"| {name} | {mode} | {np.mean(d < 1.0):.1%} | {np.mean(d < 0.5):.1%} | {fit_text} | {flagged} | "
                         f"{draws} | {r['seconds']:.1f} ({r['seconds'] / plain_s:.2f}×) | {score_text} |")
            print(lines[-1], flush=True)
    lines += ["", "Min distance: every atom of the token row (orbit members not merged, so a site on top of its own image "
              "counts as 0 Å), periodic images included; an unbuildable cell counts as neither. \"As drawn\": the "
              "crystal and lattice the plain sampler returns for the same seed fit (the model's own rate); the rest "
              "were redrawn (lattice first, then whole crystals in batched rounds)."]
    _append("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("training")
    p = sub.add_parser("compare")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--models", default="base,rl-ehull")
    p.add_argument("--no-score", action="store_true")
    args = parser.parse_args()
    if args.what == "training":
        training()
    else:
        compare(args.n, [m for m in args.models.split(",") if m], not args.no_score)


if __name__ == "__main__":
    main()
