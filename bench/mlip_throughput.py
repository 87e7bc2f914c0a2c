"""Static-energy throughput of each MLIP backend (and the band-gap model): batched vs one structure per call.

    nice -n 10 .venv/bin/python bench/mlip_throughput.py [--backends m3gnet chgnet ...] [-n 48] [--device cpu]

Structures: a seeded sample of Materials Project crystals with ≤ 24 sites from the Kind A hull files
in ``../shared/data/hulls`` (generated-like sizes, mixed chemistries). Each backend is loaded and
warmed up first; then the same structures are evaluated once in batched ``predict`` calls and once
one structure per call, in the same run. Appends a table to ``bench/mlip_throughput.md``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymatgen.core import Structure  # noqa: E402

from core import settings  # noqa: E402

OUT = Path(__file__).with_suffix(".md")


def sample_structures(n: int, seed: int = 0, max_sites: int = 24) -> list[Structure]:
    pool = []
    for name in ("Na-Fe-P-O.json.gz", "Li-Co-Ni-O.json.gz"):
        with gzip.open(settings.data_dir() / "hulls" / name, "rt") as fh:
            pool += [d["structure"] for d in json.load(fh) if len(d["structure"]["sites"]) <= max_sites]
    picks = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [Structure.from_dict(pool[i]) for i in picks]


def time_calls(predict, structures: list[Structure], **kw) -> tuple[float, float]:
    """(batched structures/s, one-by-one structures/s) of ``predict`` on ``structures``."""
    predict(structures[:2], **kw)  # warm-up (lazy imports, first-call allocations)
    start = time.perf_counter()
    batched = predict(structures, **kw)
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    single = [predict([s], **kw)[0] for s in structures]
    t_single = time.perf_counter() - start
    failed = sum(isinstance(x, Exception) for x in batched)
    if failed != sum(isinstance(x, Exception) for x in single):
        raise RuntimeError("batched and one-by-one calls disagree on which structures fail")
    return len(structures) / t_batch, len(structures) / t_single


def main() -> None:
    import torch

    from core.scoring.backends.bandgap import BandGapModel
    from core.scoring.mlip import MLIP_NAMES, load_mlip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=[*MLIP_NAMES, "bandgap"])
    parser.add_argument("-n", type=int, default=48, help="structures per measurement")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    structures = sample_structures(args.n)
    atoms = sum(len(s) for s in structures)
    with OUT.open("a") as fh:
        if OUT.stat().st_size == 0:
            fh.write("# MLIP static throughput: batched `predict` vs one structure per call\n\n"
                     "Written by `bench/mlip_throughput.py` (energy + forces + stress per structure; band gap: one value).\n")
        fh.write(f"\n## {time.strftime('%Y-%m-%d %H:%M')} — {args.n} structures ({atoms} atoms, ≤ 24 sites), device {args.device}\n\n"
                 f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
                 f"with {torch.get_num_threads()} threads; load average at the start {os.getloadavg()[0]:.1f} "
                 "(other jobs share this machine: compare ratios, not absolute rates, across runs).\n\n"
                 "| backend | batched (structures/s) | one by one (structures/s) | batched / one by one "
                 "| batched, energy only (structures/s) | model |\n"
                 "|---|---|---|---|---|---|\n")
    for name in args.backends:
        try:
            model = BandGapModel(device=args.device) if name == "bandgap" else load_mlip(name, device=args.device)
        except Exception as exc:  # e.g. Orb weights absent
            row = f"| {name} | – | – | – | – | skipped: {type(exc).__name__}: {str(exc).split('.')[0]} |"
        else:
            batched, single = time_calls(model.predict, structures)
            energy_only = "–" if name == "bandgap" else f"{time_calls(model.predict, structures, forces=False)[0]:.2f}"
            row = f"| {name} | {batched:.2f} | {single:.2f} | {batched / single:.2f}× | {energy_only} | {model.label} |"
        print(row, flush=True)
        with OUT.open("a") as fh:  # row by row, so a long run that is stopped keeps what it measured
            fh.write(row + "\n")
    print(f"appended to {OUT}")


if __name__ == "__main__":
    main()
