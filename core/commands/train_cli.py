"""``python -m core train`` (pretraining) and ``python -m core rl`` (PPO fine-tuning).

    python -m core train --preset base --out runs/base --ship checkpoints/base      # the shipped base model
    python -m core train --data my_cifs/ --out runs/mine --epochs 50 --config my_config.json
    python -m core rl --reward ehull --checkpoint checkpoints/base --out runs/rl-ehull --ship checkpoints/rl-ehull
    python -m core rl --reward fom --spacegroup 225 --checkpoint checkpoints/base --out runs/rl-fom

Both resume when ``--out`` already holds a run: rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from core.config import ModelConfig
from core.errors import InvalidInputError
from core.scoring.mlip import DEFAULT_MLIP

# The shipped base model: small enough to train on a 2-core CPU in about two hours.
BASE_PRESET = {
    "model": ModelConfig(Nf=5, Kx=16, Kl=4, h0_size=128, num_layers=6, num_heads=8, key_size=16, model_size=64,
                         embed_size=32, dropout_rate=0.1, attn_dropout=0.1, n_max=21),
    "train": {"epochs": 80, "batch_size": 64, "lr": 1e-3, "warmup_steps": 300, "weight_decay": 1e-4,
              "time_limit_s": 3 * 3600},
}
RL_PRESETS = {  # Table S1: τ = 0.1 for the energy reward, 2 for the figure of merit
    "ehull": {"tau": 0.1, "spacegroups": "train"},
    "fom": {"tau": 2.0, "spacegroups": 225},
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a CrystalFormer by maximum likelihood (resumable)")
    p.add_argument("--out", required=True, help="run folder (metrics.csv, best/, last/)")
    p.add_argument("--preset", choices=["base"], default=None, help="the shipped base model's data, config and schedule")
    p.add_argument("--data", nargs="*", default=None,
                   help="CIF files/folders, extxyz, CSV with a cif column, or JSON; default: the offline base data set")
    p.add_argument("--config", default=None, help="model config JSON (default: the preset's or the paper's)")
    p.add_argument("--init", default=None, help="start from this checkpoint's parameters (fine-tuning)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--equivalents", type=int, default=1,
                   help="augmentation: train on up to N equivalent Wyckoff descriptions of each crystal, one drawn per "
                        "epoch; the best epoch is chosen by the crystal NLL summed over descriptions (default 1: none)")
    p.add_argument("--time-limit", type=float, default=None, help="hours; stops cleanly, resume later")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", default=None, help="copy the best checkpoint here with a model card when done")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("rl", help="PPO fine-tuning with an MLIP or property reward (resumable)")
    p.add_argument("--reward", choices=sorted(RL_PRESETS), required=True,
                   help="ehull: r = -E_hull (MLIP); fom: r = eps_elec x band gap")
    p.add_argument("--checkpoint", required=True, help="policy to start from (also the KL base unless --base)")
    p.add_argument("--config", default=None, help="model config JSON for official checkpoints")
    p.add_argument("--base", default=None, help="base model for the KL penalty (default: --checkpoint)")
    p.add_argument("--out", required=True, help="run folder; the fine-tuned checkpoint is written here")
    p.add_argument("--spacegroup", default=None, help="225, 221,225, 1-230 or train (default: the reward's preset)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--tau", type=float, default=None, help="KL weight (default 0.1 ehull, 2 fom)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mlip", default=DEFAULT_MLIP, help=f"potential for the ehull reward (default {DEFAULT_MLIP})")
    p.add_argument("--hull", default="bundled", help="hull reference for the ehull reward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", default=None, help="copy the result here with a model card when done")
    p.set_defaults(func=cmd_rl)


def cmd_train(args) -> int:
    from core import data
    from core.checkpoint import load_checkpoint
    from core.train import TrainConfig, baseline_nll, crystal_nll, evaluate, train

    preset = BASE_PRESET if args.preset == "base" else None
    if args.config:
        model_config = ModelConfig.from_json(args.config)
    elif preset:
        model_config = preset["model"]
    else:
        model_config = ModelConfig()
    cfg = TrainConfig(**(preset["train"] if preset else {}))
    for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)):
        if value is not None:
            setattr(cfg, name, value)
    if args.time_limit is not None:
        cfg.time_limit_s = args.time_limit * 3600
    cfg.seed = args.seed

    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.data:
        log("reading and tokenising structures ...")
        from core.export import read_paths

        tokens = data.tokenize(read_paths(args.data), model_config.n_max, equivalents=args.equivalents)
        sources = [str(p) for p in args.data]
    else:
        tokens = data.base_training_set(model_config.n_max, progress=lambda i, n: log(f"tokenised {i}/{n}"),
                                        equivalents=args.equivalents)
        sources = ["matbench_dielectric (crystal-toolkit wheel, 4,764 MP structures)",
                   "Materials Project hull entry sets in $CFRL_DATA_DIR/hulls (Kind A)"]
    if tokens.skipped:
        log(f"skipped {sum(tokens.skipped.values())} structures: {tokens.skipped}")
    train_set, val_set = data.split(tokens, args.val_fraction, seed=args.seed)
    log(f"{len(train_set.canonical())} training / {len(val_set.canonical())} validation crystals"
        + (f" ({len(train_set)} / {len(val_set)} descriptions)" if args.equivalents > 1 else ""))
    init = load_checkpoint(args.init, None) if args.init else None
    meta = {"name": Path(args.ship or args.out).name, "data_sources": sources, "skipped": tokens.skipped,
            "model_config": model_config.to_dict()}
    out = Path(args.out)
    meta["equivalents"] = args.equivalents
    ck = train(model_config, cfg, train_set, val_set, out, init=init, meta=meta, log=log)
    val = evaluate(model_config, ck.params, val_set.canonical())
    val["crystal"] = crystal_nll(model_config, ck.params, val_set)
    train_set = train_set.canonical()
    baseline = baseline_nll(train_set, val_set.canonical(), model_config)
    log(f"validation NLL {val['total']:.2f} nats/crystal, summed over descriptions {val['crystal']:.2f} "
        f"(trivial baseline {baseline['total']:.2f})")
    ck.meta.update(val_nll=val, baseline_val_nll=baseline)
    (out / "summary.json").write_text(json.dumps({"val_nll": val, "baseline_val_nll": baseline,
                                                  "train_config": asdict(cfg)}, indent=2))
    if args.ship:
        ship(out / "best", Path(args.ship), extra_meta={"val_nll": val, "baseline_val_nll": baseline},
             training_set=train_set, metrics=out / "metrics.csv")
        log(f"shipped to {args.ship}")
    return 0


def ship(src: Path, dst: Path, extra_meta: dict | None = None, training_set=None, metrics: Path | None = None) -> None:
    """Copy a checkpoint into ``dst`` (config, params, meta), with its training set and metrics."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "params.npz"):
        shutil.copy2(src / name, dst / name)
    meta = json.loads((src / "meta.json").read_text()) if (src / "meta.json").exists() else {}
    meta.update(extra_meta or {})
    meta["name"] = dst.name
    meta["shipped_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (dst / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if training_set is not None:
        training_set.save(dst / "training_set.npz")
    if metrics is not None and Path(metrics).exists():
        shutil.copy2(metrics, dst / Path(metrics).name)


def cmd_rl(args) -> int:
    from core.checkpoint import load_checkpoint
    from core.ppo import PPOConfig, PPOTrainer, write_history
    from core.scoring.rewards import EhullReward, FomReward
    from core.sampler import parse_spacegroups

    preset = RL_PRESETS[args.reward]
    spacegroups = preset["spacegroups"] if args.spacegroup is None else args.spacegroup
    if isinstance(spacegroups, str) and spacegroups.strip().lower() != "train":
        spacegroups = parse_spacegroups(spacegroups)
    policy = load_checkpoint(args.checkpoint, args.config)
    base = load_checkpoint(args.base, args.config) if args.base else policy
    cfg = PPOConfig(steps=args.steps, batch_size=args.batch_size, tau=preset["tau"] if args.tau is None else args.tau,
                    lr=args.lr, spacegroups=spacegroups, seed=args.seed)
    reward = EhullReward(mlip=args.mlip, hull=args.hull) if args.reward == "ehull" else FomReward(mlip=args.mlip, hull=args.hull)
    out = Path(args.out)
    trainer = PPOTrainer(policy, reward, cfg, base=base, out=out,
                         meta={"reward": args.reward, "mlip": args.mlip, "hull": args.hull})
    if trainer.state.step:
        print(f"resuming at step {trainer.state.step}", file=sys.stderr)
    for log in trainer.run():
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in log.items()), file=sys.stderr, flush=True)
    write_history(out / "ppo_log.csv", trainer.state.history)
    if args.ship:
        ship(out, Path(args.ship), metrics=out / "ppo_log.csv")
        train_set = Path(args.checkpoint) / "training_set.npz"
        if train_set.exists():
            shutil.copy2(train_set, Path(args.ship) / "training_set.npz")
    if trainer.state.step < cfg.steps:
        raise InvalidInputError("stopped before the last step; rerun the same command to resume")
    return 0
