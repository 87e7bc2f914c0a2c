"""Sampling speed and memory: KV-cached decoding vs recomputing the whole prefix at every token.

    python bench/sampling.py [--batch 100] [--full-batch 10] [--repeats 2]

Paper config (4,833,575 parameters, the fixtures' ``paper/perturbed`` weights), space group 225, CPU.
Each path runs in its own process so its peak resident memory is its own. Compilation is excluded
from the speed (one warm-up call), included in the memory. Writes bench/sampling.md.
For scale: the reference implementation (full recompute of the 105-token prefix for every token)
samples 0.13 crystals/s at this setting on this 2-core machine with 3 GB peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(mode: str, batch: int, repeats: int) -> dict:
    import numpy as np

    from core import settings
    from core.checkpoint import load_checkpoint
    from core.config import ModelConfig
    from core.sampler import chunk_size, sample_arrays

    fixtures = settings.fixtures_dir() / "crystalformer" / "paper"
    ck = load_checkpoint(fixtures / "perturbed", ModelConfig.from_json(fixtures / "config.json"))
    G = np.full(batch, 225)
    use_cache = mode == "cached"
    chunk = None if use_cache else batch      # cached: the sampler's own chunking (what users get)
    t0 = time.perf_counter()
    sample_arrays(ck, G, seed=0, use_cache=use_cache, batch_size=chunk)
    warm = time.perf_counter() - t0
    times, sites = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = sample_arrays(ck, G, seed=r + 1, use_cache=use_cache, batch_size=chunk)
        times.append(time.perf_counter() - t0)
        sites.append(float((out["A"] > 0).sum(1).mean()))
    return {"mode": mode, "batch": batch, "chunk": chunk or chunk_size(ck.config, batch), "seconds": times, "crystals_per_s": batch * repeats / sum(times),
            "first_call_s": warm, "mean_sites": float(np.mean(sites)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--full-batch", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["cached", "full"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.repeats)))
        return
    results = {}
    for mode, batch in (("cached", args.batch), ("full", args.full_batch)):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(batch), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "CFRL_CACHE_DIR": os.environ.get("CFRL_CACHE_DIR", "/tmp/cfrl-bench-cache")})
        if proc.returncode:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    c, f = results["cached"], results["full"]
    ratio = c["crystals_per_s"] / f["crystals_per_s"]
    load = os.getloadavg()[0]
    lines = [
        "# Sampling benchmark (written by bench/sampling.py)",
        "",
        f"Paper config (4,833,575 parameters), space group 225, CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
        f"load average at the end {load:.1f}. Speed excludes compilation (first call); memory is the process's peak RSS.",
        "",
        "| path | batch (rows decoded at once) | crystals/s | first call (s, incl. compile) | mean sites | peak memory (MB) |",
        "|---|---|---|---|---|---|",
        *[f"| {r['mode']} | {r['batch']} ({r['chunk']}) | {r['crystals_per_s']:.2f} | {r['first_call_s']:.1f} | {r['mean_sites']:.1f} | {r['peak_rss_mb']:.0f} |"
          for r in (c, f)],
        "",
        f"**Cached / full-recompute speed ratio: {ratio:.1f}x** (target >= 20x). Cached: {c['crystals_per_s']:.1f} crystals/s "
        f"(target >= 10), peak {c['peak_rss_mb'] / 1024:.2f} GB (target <= 1.5 GB).",
        "Reference implementation at this setting on this machine: 0.13 crystals/s, 3 GB peak.",
        f"Versus the reference: {c['crystals_per_s'] / 0.13:.0f}x faster.",
        "",
    ]
    (ROOT / "bench" / "sampling.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
