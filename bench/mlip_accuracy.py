"""Which MLIP should be the default? Formation-energy and E_hull error against DFT, and throughput.

    nice -n 10 .venv/bin/python bench/mlip_accuracy.py [--backends m3gnet chgnet ...] [--static 60] [--relaxed 4]

Results of each backend are kept (``cache_dir()/bench/mlip_accuracy.json``) so backends can be
measured in separate runs of < 20 min; the table always shows every backend measured so far.

For every available backend (``core.scoring.mlip.MLIP_NAMES``; Orb without weights is reported as
skipped) and both Kind A quaternary files of ``../shared/data/hulls`` (Materials Project entries with
structures, DFT energies with MP2020 corrections and stored ``e_above_hull``):

* **static**: MLIP energy of the DFT structure, placed on that file's hull exactly as the scoring
  pipeline does with ``--hull <file>`` (MP-compatible MLIPs: MP2020-corrected total energies;
  others: formation energies relative to the MLIP's own relaxed elemental phases);
  MAE and mean signed error of E_hull against the stored DFT values, and the E_hull < 0.1 eV/atom
  classification F1;
* **relaxed**: the same after relaxing the DFT structure with the MLIP (FIRE, fmax 0.1, ≤ 500 steps);
* **throughput** of batched static energies (structures/s);
* **elemental cross-check**: the MLIP's relaxed elemental reference phases (bundled hull) against
  MP's PBE elemental references (``mp-elemental-reference-entries.json.gz``), MAE in eV/atom.

Structures: a seeded sample of entries with ≤ 24 sites (all stable ones that fit plus random others).
Writes ``bench/mlip_accuracy.md``; the default MLIP is the one with the lowest static + relaxed E_hull MAE.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry  # noqa: E402

from core import settings  # noqa: E402

FILES = ("Na-Fe-P-O.json.gz", "Li-Co-Ni-O.json.gz")
MAX_SITES = 24
RELAX_MAX_SITES = 10
STABLE_EV = 0.1


def sample(path: Path, n_static: int, n_relaxed: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    with gzip.open(path, "rt") as fh:
        raw = [d for d in json.load(fh) if sum(d["composition"].values()) <= MAX_SITES]
    rng = np.random.default_rng(seed)
    stable = [d for d in raw if d["is_stable"]]
    others = [d for d in raw if not d["is_stable"]]
    picked = stable[:n_static // 2] + [others[i] for i in rng.permutation(len(others))[:n_static - min(len(stable), n_static // 2)]]
    small = [d for d in picked if sum(d["composition"].values()) <= RELAX_MAX_SITES]
    relaxed = [small[i] for i in rng.permutation(len(small))[:n_relaxed]]
    return picked, relaxed


def f1(pred: list[float], true: list[float]) -> float:
    p = np.array(pred) < STABLE_EV
    t = np.array(true) < STABLE_EV
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def evaluate(mlip, items: list[dict], path: Path, relax: bool) -> dict[str, float]:
    from core.scoring.hull import load_hull_reference

    entries = [ComputedStructureEntry.from_dict(d) for d in items]
    structures = [e.structure for e in entries]
    start = time.perf_counter()
    if relax:
        from core.scoring.relax import relax as relax_one

        energies, steps = [], []
        for s in structures:
            try:
                r = relax_one(s, mlip)
                energies.append(r)
                steps.append(r.steps)
            except Exception as exc:  # noqa: BLE001
                energies.append(exc)
        final = [r.structure if not isinstance(r, BaseException) else s for r, s in zip(energies, structures)]
        values = [r.energy_ev if not isinstance(r, BaseException) else math.nan for r in energies]
    else:
        results = []
        for i in range(0, len(structures), 32):
            results.extend(mlip.predict(structures[i:i + 32]))
        final = structures
        values = [r.energy_ev if not isinstance(r, BaseException) else math.nan for r in results]
        steps = []
    seconds = time.perf_counter() - start
    reference = load_hull_reference(path, mlip)
    ok = [i for i, v in enumerate(values) if math.isfinite(v)]
    hull = reference.e_above_hull_many([final[i] for i in ok], [values[i] for i in ok], mlip)
    pairs = [(h, items[i]) for h, i in zip(hull, ok) if not isinstance(h, BaseException)]
    if not pairs:
        return {"n": 0, "failed": len(items)}
    return {
        "n": len(pairs), "failed": len(items) - len(pairs),
        "mae_eform": float(np.mean([abs(h.e_form_per_atom - d["e_form_per_atom"]) for h, d in pairs])),
        "mae_ehull": float(np.mean([abs(h.e_above_hull - d["e_above_hull"]) for h, d in pairs])),
        "bias": float(np.mean([h.e_above_hull - d["e_above_hull"] for h, d in pairs])),
        "f1": f1([h.e_above_hull for h, _ in pairs], [d["e_above_hull"] for _, d in pairs]),
        "seconds": seconds, "rate": len(items) / seconds,
        "mean_steps": float(np.mean(steps)) if steps else math.nan,
    }


def elemental_cross_check(mlip, elements: list[str]) -> tuple[float, dict[str, float]]:
    from core.scoring.hull import mlip_elemental_potentials

    with gzip.open(settings.data_dir() / "mp-elemental-reference-entries.json.gz", "rt") as fh:
        mp = {el: ComputedEntry.from_dict(d).energy_per_atom for el, d in json.load(fh).items()}
    ours = mlip_elemental_potentials(frozenset(elements), mlip)
    diffs = {el: ours[el] - mp[el] for el in elements if el in ours}
    return float(np.mean([abs(v) for v in diffs.values()])), diffs


def results_path() -> Path:
    """Per-backend results accumulate here, so backends can be measured in separate runs."""
    return settings.cache_dir() / "bench" / "mlip_accuracy.json"


def write_markdown(results: dict[str, dict], skipped: dict[str, str], out: Path, meta: dict) -> None:
    rows = [results[name] for name in results]
    best = min(rows, key=lambda r: r["static"]["mae_ehull"] + r["relaxed"]["mae_ehull"]) if rows else None
    elements = sorted({el for r in rows for el in r.get("elements", {}) if el != "error"})
    lines = [
        "# MLIP accuracy against DFT convex hulls",
        "",
        f"Written by `bench/mlip_accuracy.py` (last run {meta['when']}, CPU, {os.cpu_count()} cores shared with other "
        f"jobs: load average {meta['load']}; {meta.get('threads', 1)} torch/BLAS thread). Reference: Materials Project entries of "
        f"{' and '.join(f.removesuffix('.json.gz') for f in FILES)} (`../shared/data/hulls`, MP2020-corrected PBE/PBE+U, "
        f"stored e_above_hull). Per file {meta['static']} entries with ≤ {MAX_SITES} sites static (all stable ones that "
        f"fit, up to half) and {meta['relaxed']} with ≤ {RELAX_MAX_SITES} sites relaxed (FIRE + FrechetCellFilter, "
        "fmax 0.1 eV/Å, ≤ 500 steps). Errors in eV/atom. MLIPs on MP's scale (MP2020 applied, or already included "
        "as for CHGNet) are compared on total energies; MatPES-scale ones on formation energies relative to "
        "their own relaxed elemental phases. Throughput depends on the machine's load at the time.",
        "",
        "Placed on a fixed DFT hull, an MLIP's E_hull error equals its formation-energy error (both are the energy "
        "error per atom, after corrections or elemental offsets), so one column serves both; `bias` is the mean "
        "signed error (positive: the MLIP places DFT structures above where DFT does).",
        "",
        "| backend | energy scale | static E_hull (= e_form) MAE | static bias | static F1 (E_hull<0.1) | "
        "relaxed E_hull MAE | relaxed bias | relaxed F1 | static structures/s | relax steps (mean) | "
        "elemental μ vs MP MAE | n static+relaxed | failed |",
        "| --- | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s, x = r["static"], r["relaxed"]
        bold = "**" if r is best else ""
        lines.append(
            f"| {bold}{r['backend']}{bold} ({r['label']}) | {r['scale']} "
            f"| {s['mae_ehull']:.3f} | {s.get('bias', math.nan):+.3f} | {s['f1']:.2f} | {x['mae_ehull']:.3f} "
            f"| {x.get('bias', math.nan):+.3f} | {x['f1']:.2f} | {s['rate']:.2f} | {x['mean_steps']:.0f} "
            f"| {r['elements_mae']:.3f} | {s['n']}+{x['n']} | {s['failed']}+{x['failed']} |")
    for backend, reason in skipped.items():
        lines.append(f"| {backend} | – | skipped: {reason} | | | | | | | | | | |")
    lines += ["", "Elemental chemical potentials, MLIP minus MP PBE (`mp-elemental-reference-entries.json.gz`), eV/atom:", "",
              "| backend | " + " | ".join(elements) + " |", "| --- |" + " ---: |" * len(elements)]
    for r in rows:
        values = [r["elements"].get(el) for el in elements]
        lines.append(f"| {r['backend']} | " + " | ".join(f"{v:+.3f}" if isinstance(v, float) else "–" for v in values) + " |")
    if best is not None:
        lines += ["", f"**Lowest E_hull error (static + relaxed MAE): `{best['backend']}`** ({best['label']}).", ""]
    lines += meta.get("notes", [])
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    from core.scoring.mlip import MLIP_NAMES, load_mlip

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(MLIP_NAMES))
    parser.add_argument("--static", type=int, default=40, help="structures per file, static")
    parser.add_argument("--relaxed", type=int, default=3, help="structures per file, relaxed")
    parser.add_argument("--fresh", action="store_true", help="forget results of earlier runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and BLAS (1 is fastest on a shared 2-core machine)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    from bench.scoring import limit_threads

    limit_threads(args.threads)
    warnings.filterwarnings("ignore")

    store = results_path()
    saved = {} if args.fresh or not store.is_file() else json.loads(store.read_text())
    results, skipped = saved.get("results", {}), saved.get("skipped", {})
    samples = {name: sample(settings.data_dir() / "hulls" / name, args.static, args.relaxed) for name in FILES}
    elements = sorted({el for name in FILES for el in name.removesuffix(".json.gz").split("-")})
    for backend in args.backends:
        try:
            mlip = load_mlip(backend)
        except Exception as exc:  # noqa: BLE001 - e.g. Orb without weights
            skipped[backend] = str(exc).splitlines()[0][:160]
            results.pop(backend, None)
            print(f"{backend}: skipped ({exc})", flush=True)
            continue
        skipped.pop(backend, None)
        result = {"backend": backend, "label": getattr(mlip, "label", backend),
                  "scale": getattr(mlip, "energy_scale", "mp-raw" if mlip.mp_compatible else "other")}
        for mode in ("static", "relaxed"):
            per_file = [evaluate(mlip, samples[name][0 if mode == "static" else 1], settings.data_dir() / "hulls" / name,
                                 relax=(mode == "relaxed")) for name in FILES]
            n = sum(r["n"] for r in per_file)
            result[mode] = {
                "n": n, "failed": sum(r["failed"] for r in per_file),
                **{k: sum(r.get(k, 0) * r["n"] for r in per_file) / max(n, 1) for k in ("mae_eform", "mae_ehull", "bias", "f1")},
                "rate": n / max(sum(r.get("seconds", 0) for r in per_file), 1e-9),
                "mean_steps": float(np.nanmean([r.get("mean_steps", math.nan) for r in per_file])) if mode == "relaxed" else math.nan,
            }
            print(backend, mode, result[mode], flush=True)
        try:
            result["elements_mae"], result["elements"] = elemental_cross_check(mlip, elements)
        except Exception as exc:  # noqa: BLE001
            result["elements_mae"], result["elements"] = math.nan, {"error": str(exc)}
        results[backend] = result
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps({"results": results, "skipped": skipped}))
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
            "static": args.static, "relaxed": args.relaxed, "threads": args.threads}
    write_markdown(results, skipped, Path(args.out), meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
