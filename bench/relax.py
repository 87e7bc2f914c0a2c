"""Relaxation throughput: batched FIRE (``relax_many``) vs one structure at a time (``relax``), same run.

    nice -n 10 .venv/bin/python bench/relax.py [--n 200] [--mlip m3gnet] [--steps 500] [--fmax 0.1]

Generates ``--n`` crystals with the shipped base checkpoint (``core.sampler.sample``, space groups from
its training distribution, seed 0), keeps those the MLIP can evaluate, and relaxes the same set twice
with the pipeline's settings (FIRE + FrechetCellFilter, fmax 0.1 eV/Å, ≤ 500 steps):

1. one at a time: ``core.scoring.relax.relax`` (ASE's FIRE on the MLIP's ASE calculator), the baseline;
2. batched: ``core.scoring.relax.relax_many`` (each structure its own FIRE state, filter and convergence;
   one batched model call per step).

Reports wall time of each arm, the ratio, and the largest difference in final energy per atom
(target: ratio ≥ 3×, |ΔE| ≤ 1e-3 eV/atom). Writes ``bench/relax.md`` (appends a section per run).
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

TARGET_RATIO = 3.0
TOLERANCE_EV = 1e-3   # eV/atom


def generated(n: int, mlip, seed: int = 0) -> list:
    """``n`` crystals from checkpoints/base that the MLIP accepts (``mlip.check``)."""
    from core import settings
    from core.checkpoint import load_checkpoint
    from core.sampler import sample

    checkpoint = load_checkpoint(settings.checkpoints_dir() / "base")
    out = []
    draw = 0
    while len(out) < n and draw < 5:
        for s in sample(checkpoint, "train", num=2 * n, seed=seed + draw):
            if s.structure is None:
                continue
            try:
                mlip.check(s.structure)
            except Exception:  # noqa: BLE001 - the bench measures relaxations, not the screen
                continue
            out.append(s.structure)
            if len(out) == n:
                break
        draw += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--mlip", default="m3gnet")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--fmax", type=float, default=0.1)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args()

    import torch

    from core.scoring.mlip import load_mlip
    from core.scoring.relax import MAX_GROUP_ATOMS, relax, relax_many

    mlip = load_mlip(args.mlip, device="cpu")
    structures = generated(args.n, mlip)
    atoms = sum(len(s) for s in structures)
    print(f"{len(structures)} generated crystals, {atoms} atoms", flush=True)
    relax_many(structures[:2], mlip, fmax=args.fmax, steps=5)     # warm-up: model graphs, imports
    relax(structures[0], mlip, fmax=args.fmax, steps=5)
    load = os.getloadavg()[0]

    start = time.perf_counter()
    batched = relax_many(structures, mlip, fmax=args.fmax, steps=args.steps)
    t_batched = time.perf_counter() - start
    print(f"batched: {t_batched:.1f} s", flush=True)

    single = []
    start = time.perf_counter()
    for structure in structures:
        try:
            single.append(relax(structure, mlip, fmax=args.fmax, steps=args.steps))
        except Exception as exc:  # noqa: BLE001 - a failure is compared like a result
            single.append(exc)
    t_single = time.perf_counter() - start
    print(f"one at a time: {t_single:.1f} s", flush=True)

    both = [(a, b) for a, b in zip(single, batched) if not isinstance(a, Exception) and not isinstance(b, Exception)]
    failed_single = sum(isinstance(a, Exception) for a in single)
    failed_batched = sum(isinstance(b, Exception) for b in batched)
    diffs = np.array([abs(a.energy_per_atom - b.energy_per_atom) for a, b in both])
    same_steps = sum(a.steps == b.steps for a, b in both)
    steps_single = sum(a.steps for a, _ in both)
    steps_batched = sum(b.steps for _, b in both)
    converged = (sum(a.converged for a, _ in both), sum(b.converged for _, b in both))
    ratio = t_single / t_batched
    within = int(np.sum(diffs <= TOLERANCE_EV))

    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    lines = [
        f"## {stamp} UTC — {len(structures)} generated crystals ({atoms} atoms), {mlip.label}, device cpu",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, both arms on 1 torch and 1 BLAS "
        f"thread (`single_threaded`); load average at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f} (other jobs share this machine: compare the ratio, "
        "not absolute times, across runs). Settings: FIRE + FrechetCellFilter, "
        f"fmax {args.fmax} eV/Å, ≤ {args.steps} steps; batched model calls of ≤ {MAX_GROUP_ATOMS} atoms; "
        "both arms in this run, batched first.",
        "",
        "| arm | wall time (s) | crystals/s | FIRE steps (sum) | converged | failed |",
        "|---|---|---|---|---|---|",
        f"| one at a time (`relax`, ASE FIRE + FrechetCellFilter) | {t_single:.1f} | {len(structures) / t_single:.2f} "
        f"| {steps_single} | {converged[0]} | {failed_single} |",
        f"| batched (`relax_many`) | {t_batched:.1f} | {len(structures) / t_batched:.2f} | {steps_batched} "
        f"| {converged[1]} | {failed_batched} |",
        "",
        f"**Ratio: {ratio:.2f}×** (target ≥ {TARGET_RATIO:g}×: {'met' if ratio >= TARGET_RATIO else 'NOT met'}).",
        f"Final energy per atom: {within}/{len(both)} within {TOLERANCE_EV:g} eV/atom; largest |ΔE| "
        f"{diffs.max() if diffs.size else float('nan'):.2e} eV/atom, median {np.median(diffs) if diffs.size else float('nan'):.2e}; "
        f"{same_steps}/{len(both)} took the same number of steps (the batched model call evaluates the same "
        "network on a batched graph, so forces differ in the last float32 digits and long FIRE paths can drift).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    header = "# Relaxation: batched FIRE vs one structure at a time\n\nWritten by `bench/relax.py`.\n\n"
    previous = out.read_text() if out.exists() else header
    out.write_text(previous.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
