"""Pretraining: maximum likelihood on tokenised crystals.

    python -m core train --out runs/base --epochs 200            (resumes when runs/base has a state)

AdamW with linear warm-up and cosine decay, gradient clipping at global norm 1 (the paper's), dropout
from the model config, a fixed-seed train/validation split, a metrics log (``metrics.csv``: step,
epoch, learning rate, train loss and its parts, validation loss and its parts, seconds), a checkpoint
of the best validation loss (``best/``) and of the latest state (``last/``, with optimizer moments,
for resuming).

Augmentation: when the training set holds equivalent descriptions of its crystals (``core.data``,
``equivalents`` > 1), every epoch sees each crystal once, in a description drawn at random. The model then
spreads a crystal's probability over its descriptions, so the validation NLL of the canonical description
alone stops measuring it; the NLL of the crystal, −log Σ_descriptions p (``crystal_nll``, column
``val_crystal``), is what selects the best epoch. Without equivalents that column equals ``val_loss``.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from core.checkpoint import Checkpoint, load_optimizer_state, save_checkpoint, save_optimizer_state
from core.config import ModelConfig
from core.data import ARRAY_KEYS, TokenSet
from core.errors import InvalidInputError
from core.logp import batched_logp, loss_fn
from core.model import count_params, init_params

PARTS = ("w", "a", "xyz", "l")
# Sequence lengths (sites) the batches are cut to. A crystal needs its sites plus one padding site (the
# stop letter and the lattice are read there); tokens after that contribute exactly zero to the
# log-likelihood, so cutting them off changes nothing but the cost (mean 6 sites of 21 in our data).
SITE_BUCKETS = (4, 6, 8, 11, 15, 21)


def bucketed_batches(arrays: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                     n_max: int) -> list[dict[str, np.ndarray]]:
    """One epoch of batches, each cut to the shortest bucket that holds all its crystals plus a stop site.

    Crystals are grouped by bucket, shuffled within it, cut into full batches (a bucket's remainder is
    filled up with other crystals of the same bucket), and the batches are shuffled.
    """
    needed = (arrays["A"] > 0).sum(1) + 1
    buckets = [b for b in SITE_BUCKETS if b < n_max] + [n_max]
    which = np.searchsorted(buckets, needed)
    batches = []
    for k, length in enumerate(buckets):
        idx = rng.permutation(np.flatnonzero(which == k))
        if len(idx) == 0:
            continue
        if len(idx) % batch_size:
            idx = np.concatenate([idx, rng.choice(idx, batch_size - len(idx) % batch_size)])
        for chunk in idx.reshape(-1, batch_size):
            batches.append({key: (v[chunk, :length] if v.ndim > 1 and key != "L" else v[chunk]) for key, v in arrays.items()})
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3            # peak learning rate
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    seed: int = 0
    eval_every: int = 1         # epochs between validation passes
    time_limit_s: float | None = None  # stop cleanly (and save) after this many seconds


def learning_rate(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``total_steps``."""
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, max(1, cfg.warmup_steps), max(cfg.warmup_steps + 1, total_steps), cfg.lr * cfg.min_lr_ratio)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                       optax.adamw(learning_rate(cfg, total_steps), weight_decay=cfg.weight_decay))


def _save_state(folder: Path, model_config: ModelConfig, params, opt_state, state: dict, meta: dict) -> None:
    save_checkpoint(folder, model_config, params, meta)
    save_optimizer_state(folder, opt_state)
    (folder / "train_state.json").write_text(json.dumps(state, indent=2) + "\n")


def _load_state(folder: Path, params, opt_state):
    from core.checkpoint import load_checkpoint

    ck = load_checkpoint(folder)
    return ck.params, load_optimizer_state(folder, opt_state), json.loads((folder / "train_state.json").read_text())


def evaluate(model_config: ModelConfig, params, data: TokenSet, batch_size: int = 256) -> dict[str, float]:
    """Mean negative log-likelihood per crystal (nats) and its parts on a token set."""
    lp = batched_logp(model_config, params, *(data.arrays[k] for k in ARRAY_KEYS), batch_size=batch_size)
    parts = {p: float(-np.mean(getattr(lp, p))) for p in PARTS}
    parts["total"] = sum(parts[p] for p in PARTS)
    return parts


def crystal_nll(model_config: ModelConfig, params, data: TokenSet, batch_size: int = 256) -> float:
    """Mean negative log-likelihood per crystal (nats) with each crystal's probability summed over its
    descriptions in ``data`` (rows sharing a ``crystal`` index); equals ``evaluate``'s total without them."""
    lp = batched_logp(model_config, params, *(data.arrays[k] for k in ARRAY_KEYS), batch_size=batch_size).total
    crystals = data.crystals
    _, group = np.unique(crystals, return_inverse=True)
    peak = np.full(group.max() + 1, -np.inf)
    np.maximum.at(peak, group, lp)
    total = np.zeros_like(peak)
    np.add.at(total, group, np.exp(lp - peak[group]))
    return float(-np.mean(peak + np.log(total)))


def train(model_config: ModelConfig, cfg: TrainConfig, train_set: TokenSet, val_set: TokenSet, out: str | Path,
          *, init: Checkpoint | None = None, resume: bool = True, meta: dict | None = None,
          log: Callable[[str], None] = print) -> Checkpoint:
    """Train (or resume) and return the best-validation checkpoint (also saved in ``out/best``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(train_set)
    if n < cfg.batch_size:
        raise InvalidInputError(f"{n} training crystals is fewer than one batch of {cfg.batch_size}")
    augmented = "crystal" in train_set.arrays

    def epoch_arrays(epoch: int) -> dict[str, np.ndarray]:
        if not augmented:
            return train_set.arrays
        return train_set.one_per_crystal(np.random.default_rng([cfg.seed, epoch, 1])).arrays

    rng_np = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(bucketed_batches(epoch_arrays(1), cfg.batch_size, rng_np, model_config.n_max))
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = make_optimizer(cfg, total_steps)
    params = init.params if init is not None else init_params(model_config, cfg.seed)
    opt_state = optimizer.init(params)
    state = {"step": 0, "epoch": 0, "best_val": math.inf, "elapsed_s": 0.0}
    if resume and (out / "last" / "train_state.json").exists():
        params, opt_state, state = _load_state(out / "last", params, opt_state)
        log(f"resuming from {out / 'last'} at epoch {state['epoch']} (step {state['step']})")
    meta = dict(meta or {})
    meta.update(param_count=count_params(params), train_config=asdict(cfg), train_size=n, val_size=len(val_set),
                spacegroup_distribution=train_set.spacegroup_distribution())

    @jax.jit
    def step(params, opt_state, batch, rng):
        (loss, parts), grads = jax.value_and_grad(
            lambda p: loss_fn(model_config, p, batch, rng=rng), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, parts

    metrics_path = out / "metrics.csv"
    new_file = not metrics_path.exists() or state["step"] == 0
    fh = open(metrics_path, "w" if new_file else "a", newline="")
    writer = csv.writer(fh)
    if new_file:
        writer.writerow(["step", "epoch", "lr", "train_loss", *[f"train_{p}" for p in PARTS],
                         "val_loss", *[f"val_{p}" for p in PARTS], "val_crystal", "elapsed_s"])
    lr_at = learning_rate(cfg, total_steps)
    start = time.time() - state["elapsed_s"]
    rng = jax.random.PRNGKey(cfg.seed)
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            batches = bucketed_batches(epoch_arrays(epoch), cfg.batch_size, np.random.default_rng(cfg.seed + epoch),
                                       model_config.n_max)
            sums = {p: 0.0 for p in ("loss", *PARTS)}
            for b in batches:
                batch = tuple(jnp.asarray(b[k]) for k in ARRAY_KEYS)
                params, opt_state, loss, parts = step(params, opt_state, batch, jax.random.fold_in(rng, state["step"]))
                state["step"] += 1
                sums["loss"] += float(loss)
                for p in PARTS:
                    sums[p] += float(parts[p])
            state["epoch"] = epoch
            train_metrics = {k: v / len(batches) for k, v in sums.items()}
            val = None
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                val = evaluate(model_config, params, val_set.canonical())
                val["crystal"] = crystal_nll(model_config, params, val_set) if "crystal" in val_set.arrays else val["total"]
            state["elapsed_s"] = time.time() - start
            writer.writerow([state["step"], epoch, f"{float(lr_at(state['step'])):.3e}",
                             f"{train_metrics['loss']:.4f}", *[f"{train_metrics[p]:.4f}" for p in PARTS],
                             *([f"{val['total']:.4f}", *[f"{val[p]:.4f}" for p in PARTS], f"{val['crystal']:.4f}"]
                               if val else [""] * 6),
                             f"{state['elapsed_s']:.1f}"])
            fh.flush()
            log(f"epoch {epoch}/{cfg.epochs}  train {train_metrics['loss']:.3f}"
                + (f"  val {val['total']:.3f} (w {val['w']:.2f} a {val['a']:.2f} xyz {val['xyz']:.2f} l {val['l']:.2f};"
                   f" crystal {val['crystal']:.3f})" if val else "")
                + f"  {state['elapsed_s'] / 60:.1f} min")
            if val and val["crystal"] < state["best_val"]:
                state["best_val"] = val["crystal"]
                save_checkpoint(out / "best", model_config, params,
                                {**meta, "epoch": epoch, "step": state["step"], "val_nll": val, "train_nll": train_metrics,
                                 "wall_time_s": state["elapsed_s"]})
            _save_state(out / "last", model_config, params, opt_state, state, {**meta, "epoch": epoch})
            if cfg.time_limit_s and state["elapsed_s"] > cfg.time_limit_s:
                log(f"time limit reached after epoch {epoch}; resume with the same command")
                break
    finally:
        fh.close()
    from core.checkpoint import load_checkpoint

    best = out / "best" if (out / "best").exists() else out / "last"
    return load_checkpoint(best)


def baseline_nll(train_set: TokenSet, val_set: TokenSet, model_config: ModelConfig) -> dict[str, float]:
    """A trivial baseline: independent frequencies of Wyckoff letters (per space group) and elements from
    the training set, uniform coordinates, one Gaussian per lattice parameter and crystal system.
    Mean validation NLL per crystal (nats), comparable to ``evaluate``."""
    from core import wyckoff
    from core.crystal_systems import lattice_family
    from core.lattice import LATTICE_MASK

    tr, va = train_set.arrays, val_set.arrays
    nw, na = model_config.wyck_types, model_config.atom_types
    w_counts = np.ones((231, nw))
    np.add.at(w_counts, (np.repeat(tr["G"], tr["W"].shape[1]), tr["W"].ravel()), 1)
    a_counts = np.ones(na)
    np.add.at(a_counts, tr["A"][tr["A"] > 0], 1)
    logw = np.log(w_counts / w_counts.sum(1, keepdims=True))
    loga = np.log(a_counts / a_counts.sum())
    fc = wyckoff.tables().fc_mask
    systems = lattice_family(tr["G"])
    nll = []
    for i in range(len(va["G"])):
        g, W, A, L = va["G"][i], va["W"][i], va["A"][i], va["L"][i]
        sites = A > 0
        first_pad = int(sites.sum())
        lw = logw[g, W[sites]].sum() + logw[g, 0] * (first_pad < len(W))
        la = loga[A[sites]].sum()
        lx = -np.log(2 * np.pi) * fc[g - 1, W[sites]].sum()
        sys_i = lattice_family(g)
        same = tr["L"][systems == sys_i]
        mu, sd = same.mean(0), same.std(0) + 1e-3
        free = LATTICE_MASK[g - 1]
        ll = (-0.5 * ((L - mu) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi)))[free].sum()
        nll.append(-(lw + la + lx + ll))
    return {"total": float(np.mean(nll))}

