"""Does RL fine-tuning do what it should? Base vs the shipped RL checkpoints, same scorer.

    python bench/rl_report.py [--num 1000] [--mlip m3gnet]

* ``rl-ehull`` vs ``base``: ``num`` samples each, space groups from the training distribution, static
  MLIP energy + energy above the bundled hull; the fraction with E_hull < 0.1 eV/atom (the paper:
  44.7% -> 73.4% with its own models and Orb).
* ``rl-fom`` vs ``base``: ``num`` samples each in Fm-3m (225); band gap, ε_elec and FoM = ε·E_g; mean FoM;
  and the KL divergence KL(p_rl || p_base) estimated on the RL samples (nats per crystal).
* A band gap vs ε_elec scatter of base and RL (like the paper's Fig. 6a): bench/rl_report_fom.png.
Writes bench/rl_report.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def draw(ck, spacegroup, num, seed):
    from core.sampler import sample

    samples = sample(ck, spacegroup, num, seed=seed)
    return samples, [s.structure for s in samples if s.structure is not None]


def distinct_formulas(structures) -> int:
    """How many different reduced formulas the samples have (diversity; RL can collapse onto a few)."""
    return len({s.composition.reduced_formula for s in structures})


def kl_estimate(policy, base, samples) -> float:
    """Monte Carlo KL(p_policy || p_base) = mean over policy samples of log p_policy − log p_base (nats)."""
    from core.logp import batched_logp
    from core.tokens import stack

    arrays = stack([s.tokens for s in samples], policy.config.n_max)
    keys = ("G", "L", "XYZ", "A", "W")
    lp = batched_logp(policy.config, policy.params, *(arrays[k] for k in keys)).total
    lb = batched_logp(base.config, base.params, *(arrays[k] for k in keys)).total
    return float(np.mean(lp - lb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--mlip", default="m3gnet")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    from core.checkpoint import load_checkpoint
    from core.scoring import score
    from core.settings import checkpoints_dir

    base = load_checkpoint(checkpoints_dir() / "base")
    rl_ehull = load_checkpoint(checkpoints_dir() / "rl-ehull")
    rl_fom = load_checkpoint(checkpoints_dir() / "rl-fom")
    lines = ["# RL report (written by bench/rl_report.py)", "",
             f"{args.num} samples per model, seed {args.seed}, the same scorer for every model. "
             f"MLIP: {args.mlip}, static (no relaxation), hull: bundled reference set.", ""]

    # --- energy above hull -------------------------------------------------------------------
    t0 = time.time()
    rows = []
    for name, ck in (("base", base), ("rl-ehull", rl_ehull)):
        samples, structures = draw(ck, "train", args.num, args.seed)
        df = score(structures, mlip=args.mlip, hull="bundled", properties=False)
        e = df["e_above_hull"].to_numpy(float)
        scored = np.isfinite(e)
        rows.append({"model": name, "built": len(structures) / args.num, "scored": scored.sum() / args.num,
                     "stable": float(np.sum(scored & (e < 0.1)) / args.num),
                     "stable_of_scored": float(np.mean(e[scored] < 0.1)) if scored.any() else float("nan"),
                     "median": float(np.nanmedian(e)), "formulas": distinct_formulas(structures), "kl": kl_estimate(ck, base, samples) if name != "base" else 0.0})
        print(rows[-1], flush=True)
    lines += ["## Energy above hull: rl-ehull vs base (space groups from the training distribution)", "",
              "| model | buildable | scored | E_hull < 0.1 eV/atom (of all samples) | (of scored) | median E_hull (eV/atom) | distinct formulas | KL to base (nats) |",
              "|---|---|---|---|---|---|---|---|",
              *[f"| {r['model']} | {r['built']:.1%} | {r['scored']:.1%} | **{r['stable']:.1%}** | {r['stable_of_scored']:.1%} | "
                f"{r['median']:.3f} | {r['formulas']} | {r['kl']:.2f} |" for r in rows],
              "", f"Paper, with its own models (alex20, Orb): 44.7% -> 73.4%. ({time.time() - t0:.0f} s)", ""]

    # --- figure of merit in Fm-3m -------------------------------------------------------------
    t0 = time.time()
    fom_rows, clouds = [], {}
    for name, ck in (("base", base), ("rl-fom", rl_fom)):
        samples, structures = draw(ck, 225, args.num, args.seed)
        df = score(structures, mlip=args.mlip, hull=None, properties=True)
        clouds[name] = df
        fom = df["fom_ev"].to_numpy(float)
        fom_rows.append({"model": name, "scored": np.isfinite(fom).sum() / args.num,
                         "fom_mean": float(np.nanmean(fom)), "fom_median": float(np.nanmedian(fom)),
                         "fom_gt_20": float(np.sum(fom > 20) / args.num),
                         "gap": float(np.nanmean(df["band_gap_ev"])), "eps": float(np.nanmean(df["eps_elec"])),
                         "formulas": distinct_formulas(structures),
                         "kl": kl_estimate(ck, base, samples) if name != "base" else 0.0})
        print(fom_rows[-1], flush=True)
    lines += ["## Figure of merit: rl-fom vs base in Fm-3m (225)", "",
              "| model | scored | mean FoM (eV) | median FoM (eV) | FoM > 20 eV | mean E_g (eV) | mean ε_elec | distinct formulas | KL to base (nats) |",
              "|---|---|---|---|---|---|---|---|---|",
              *[f"| {r['model']} | {r['scored']:.1%} | **{r['fom_mean']:.2f}** | {r['fom_median']:.2f} | {r['fom_gt_20']:.1%} | "
                f"{r['gap']:.2f} | {r['eps']:.2f} | {r['formulas']} | {r['kl']:.2f} |" for r in fom_rows],
              "", f"({time.time() - t0:.0f} s)", "", "![band gap vs ε_elec](rl_report_fom.png)", ""]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.scoring.pareto import pareto_points

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for (name, df), colour in zip(clouds.items(), ("tab:blue", "tab:red")):
        ax.scatter(df["band_gap_ev"], df["eps_elec"], s=6, alpha=0.4, color=colour, label=name)
        fx, fy, _ = pareto_points(df["band_gap_ev"], df["eps_elec"])
        ax.step(fx, fy, where="post", color=colour, lw=1.5)
    gap = np.linspace(0.2, 10, 200)
    for fom in (5, 10, 20):
        ax.plot(gap, fom / gap, ls=":", color="grey", lw=1)
        ax.text(9.5, fom / 9.5, f"{fom} eV", fontsize=7, color="grey", va="bottom", ha="right")
    ax.set(xlabel="band gap $E_g$ (eV)", ylabel=r"$\varepsilon_{elec}$", ylim=(0, 30), xlim=(0, 10),
           title="Fm-3m samples: base vs RL (FoM reward)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "rl_report_fom.png")
    (ROOT / "bench" / "rl_report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
