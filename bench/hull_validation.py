"""How far to trust E_hull: hull coverage of generated crystals, and a leave-system-out test of completion.

    nice -n 10 .venv/bin/python bench/hull_validation.py coverage [--n 300]
    nice -n 10 .venv/bin/python bench/hull_validation.py leave-out [--pairs Co-O,Fe-P] [--per-pair 8]

``coverage``: ``--n`` samples each from checkpoints/base and checkpoints/rl-ehull (or ``--models``) (space groups from the
training distribution, seed 0), scored statically with the default MLIP on the bundled hull; per model the
share of scored samples in each coverage class (``core.scoring.coverage``), the share more than
0.1 eV/atom below the hull, and the stability rate over judged rows next to the old all-rows rate.

``leave-out``: for each element pair (a binary subsystem of the Materials Project Kind A files in
``shared/data/hulls``), every bundled compound of exactly that pair is removed from the reference; the
pair's MP binaries (up to ``--per-pair``: the stable ones first, then by MP e_above_hull) are placed on
(a) the bundled hull without them (elements only in that pair: E_hull = E_form, a lower bound) and
(b) the same hull completed by prototype substitution (``hull="bundled+complete"``), each with the MP
structure static and relaxed (relaxed against relaxed references). Compared with the DFT
``e_above_hull`` stored in the files: MAE (eV/atom) and F1 of "stable" (E_hull ≤ 0.1 eV/atom).

Writes ``bench/hull_validation.md`` (appends a section per run).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STABLE_EV = 0.1
OUT = Path(__file__).with_suffix(".md")


def _append(text: str) -> None:
    out = OUT
    header = "# E_hull validation: hull coverage and leave-system-out completion\n\nWritten by `bench/hull_validation.py`.\n\n"
    previous = out.read_text() if out.exists() else header
    out.write_text(previous.rstrip("\n") + "\n\n" + text + "\n")
    print(text)


def _machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads; load average {os.getloadavg()[0]:.1f} (other jobs share this machine)")


# ---------------------------------------------------------------- coverage of generated samples


def coverage(n: int, models: list[str], footings: list[str]) -> None:
    from core import settings
    from core.checkpoint import load_checkpoint
    from core.sampler import sample
    from core.scoring.coverage import COVERAGE_CLASSES
    from core.scoring.metrics import summarize
    from core.scoring.pipeline import score

    rows = []
    for name in models:
        path = Path(name) if Path(name).is_dir() else settings.checkpoints_dir() / name
        checkpoint = load_checkpoint(path)
        structures = [s.structure for s in sample(checkpoint, "train", num=n, seed=0) if s.structure is not None]
        for footing in footings:
            start = time.perf_counter()
            table = score(structures, hull="bundled", properties=False, relax=footing == "relaxed")
            scored = table[table["e_above_hull"].notna()]
            shares = {c: float((scored["hull_coverage"] == c).mean()) if len(scored) else float("nan")
                      for c in COVERAGE_CLASSES}
            below = float((scored["e_above_hull"] < -STABLE_EV).mean()) if len(scored) else float("nan")
            full = scored[scored["hull_coverage"] == "full"]
            below_full = float((full["e_above_hull"] < -STABLE_EV).mean()) if len(full) else float("nan")
            examples = ", ".join(f"{r.formula} {r.e_above_hull:.2f} ({r.hull_coverage})" for r in
                                 scored.nsmallest(5, "e_above_hull").itertuples()) if "formula" in scored else ""
            old_rate = float((table["e_above_hull"] < STABLE_EV).sum() / len(table)) if len(table) else float("nan")
            summary = summarize(table)
            rows.append((name, footing, n, len(structures), len(scored), shares, (below, below_full), old_rate, summary,
                         examples, time.perf_counter() - start))
            print(name, footing, len(scored), shares, below, flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    lines = [f"## {stamp} UTC — coverage of generated samples ({n} per model, training space groups, seed 0)", "",
             f"{_machine()}. M3GNet-MP-2021.2.8-PES energies, `hull=\"bundled\"` (matbench_dielectric + MP hull "
             "files), coverage rule of `core/scoring/coverage.py`. Footing: static = candidates and reference compounds "
             "at their own geometry (compounds at their MP geometry); relaxed = candidates relaxed (`score(relax=True)`: "
             "FIRE + FrechetCellFilter, fmax 0.1 eV/Å, ≤ 500 steps) against compounds relaxed the same way "
             "(`checkpoints/hull-references`, section `compounds-relaxed-r1`). Shares are of the samples with an "
             "E_hull (scored); the same samples in both footings.", "",
             "| model | footing | samples | built | scored | full | partial | elements-only | > 0.1 eV/atom below hull "
             "(all scored / full coverage only) | "
             "stable, old rule (E_hull < 0.1, all rows) | stable, judged rows only | unjudged share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, footing, n_samples, built, n_scored, shares, (below, below_full), old_rate, summary, _, _ in rows:
        lines.append(f"| {name} | {footing} | {n_samples} | {built} | {n_scored} | {shares['full']:.1%} | {shares['partial']:.1%} | "
                     f"{shares['elements-only']:.1%} | {below:.1%} / {below_full:.1%} | {old_rate:.1%} | {summary['stability_rate']:.1%} | "
                     f"{summary['unjudged_share']:.1%} |")
    lines.append("")
    lines.append("Lowest E_hull per run (eV/atom, coverage): " + "; ".join(f"{r[0]} {r[1]}: {r[-2]}" for r in rows) + ".")
    lines.append("")
    lines.append("Wall time: " + ", ".join(f"{r[0]} {r[1]} {r[-1]:.0f} s" for r in rows) + ".")
    _append("\n".join(lines))


# ---------------------------------------------------------------- leave-system-out


def _kind_a_binaries(pair: frozenset[str]) -> list[dict]:
    from core import settings

    found: dict[str, dict] = {}
    for path in sorted((settings.data_dir() / "hulls").glob("*.json.gz")):
        items = json.load(gzip.open(path, "rt"))
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and "structure" in item:
                elements = {sp["element"] for site in item["structure"]["sites"] for sp in site["species"]}
                if elements == pair:
                    found.setdefault(item["entry_id"], item)
    return sorted(found.values(), key=lambda d: (not d.get("is_stable"), d["e_above_hull"]))


def _f1(true: np.ndarray, predicted: np.ndarray) -> float:
    tp = float(np.sum(true & predicted))
    fp = float(np.sum(~true & predicted))
    fn = float(np.sum(true & ~predicted))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def leave_out(pairs: list[frozenset[str]], per_pair: int) -> None:
    from pymatgen.core import Structure

    from core.scoring import hull
    from core.scoring.mlip import DEFAULT_MLIP, load_mlip
    from core.scoring.references.bundled import load_bundled_compounds
    from core.scoring.relax import relax_many

    mlip = load_mlip(DEFAULT_MLIP, device="cpu")
    table = load_bundled_compounds()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    reports = []
    start = time.perf_counter()
    for pair in pairs:
        items = _kind_a_binaries(pair)[:per_pair]
        if not items:
            continue
        structures = []
        for item in items:
            s = Structure.from_dict(item["structure"])
            for prop in list(s.site_properties):
                s.remove_site_property(prop)
            structures.append(s)
        dft = [float(item["e_above_hull"]) for item in items]
        excluded = frozenset(row for row in table.rows if table.element_sets[row] == pair)
        static = [r.energy_ev if not isinstance(r, Exception) else np.nan for r in mlip.predict(structures, forces=False)]
        relaxed_results = relax_many(structures, mlip)
        relaxed = [(r.structure, r.energy_ev) if not isinstance(r, Exception) else None for r in relaxed_results]
        for completed in (False, True):
            for footing in ("static", "relaxed"):
                cls = hull.CompletedBundledReference if completed else hull.BundledReference
                reference = cls(mlip, relaxed=footing == "relaxed", exclude=excluded)
                if footing == "static":
                    queries = [(s, e) for s, e in zip(structures, static)]
                else:
                    queries = [q if q is not None else (s, np.nan) for s, q in zip(structures, relaxed)]
                out = reference.e_above_hull_many([q[0] for q in queries], [q[1] for q in queries], mlip)
                key = ("bundled+completion" if completed else "bundled only", footing)
                for d, r in zip(dft, out):
                    results.setdefault(key, []).append((d, r.e_above_hull if not isinstance(r, Exception) else np.nan))
                if completed and footing == "static":
                    reports.extend(reference.reports.values())
        print("-".join(sorted(pair)), "done", flush=True)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    names = ", ".join("-".join(sorted(p)) for p in pairs)
    lines = [f"## {stamp} UTC — leave-system-out on the MP hull files: pairs {names}, ≤ {per_pair} MP binaries each", "",
             f"{_machine()}. M3GNet-MP-2021.2.8-PES; the pair's compounds are removed from the bundled reference, its MP "
             "binaries (stable first, then by MP e_above_hull) are placed on the remaining hull; truth: the DFT "
             "`e_above_hull` stored in the files (MP2020-corrected GGA/GGA+U). Subsample stated above; "
             f"wall time {time.perf_counter() - start:.0f} s.", "",
             "| reference | footing | n | MAE (eV/atom) | F1 stable (≤ 0.1 eV/atom) | mean signed error (eV/atom) |",
             "|---|---|---|---|---|---|"]
    for (ref, footing), pairs_ in sorted(results.items()):
        arr = np.array(pairs_, dtype=float)
        ok = np.isfinite(arr[:, 1])
        d, p = arr[ok, 0], arr[ok, 1]
        mae = float(np.mean(np.abs(p - d))) if ok.any() else float("nan")
        lines.append(f"| {ref} | {footing} | {int(ok.sum())} | {mae:.3f} | {_f1(d <= STABLE_EV, p <= STABLE_EV):.2f} | "
                     f"{float(np.mean(p - d)) if ok.any() else float('nan'):+.3f} |")
    lines += ["", "Completion reports (static reference):", "", "```"]
    lines += [report.text() for report in reports]
    lines += ["```"]
    _append("\n".join(lines))


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cov = sub.add_parser("coverage")
    cov.add_argument("--n", type=int, default=300)
    cov.add_argument("--models", default="base,rl-ehull", help="shipped checkpoint names or checkpoint folders")
    cov.add_argument("--footings", default="static", help="static, relaxed or static,relaxed")
    out = sub.add_parser("leave-out")
    out.add_argument("--pairs", default="Co-O,Fe-P")
    out.add_argument("--per-pair", type=int, default=8)
    for p in (cov, out):
        p.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    OUT = Path(args.out)
    if args.what == "coverage":
        coverage(args.n, args.models.split(","), args.footings.split(","))
    else:
        leave_out([frozenset(p.split("-")) for p in args.pairs.split(",")], args.per_pair)


if __name__ == "__main__":
    main()
