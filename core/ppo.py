"""Reinforcement fine-tuning with PPO and a KL penalty to the base model (paper, Appendix C).

Objective (Eq. 1): maximise E_{x~pθ}[ r(x) − τ ln(pθ(x)/p_base(x)) ]. Per step k:

1. draw a batch from the current policy p_old (space groups as configured);
2. score it: r(x) from any callable on Structures (the paper's −E_hull and FoM = ε_elec·E_g live with the
   scorers, in the scoring package's ``rewards`` module; this loop imports no scorer);
3. R(x) = r(x) − τ ln(p_old(x)/p_base(x)); baseline b_k = η b_{k−1} + (1−η) mean(R_k), b_0 = mean(R_0),
   η = 0.95; advantage A(x) = r(x) − b_k;
4. three updates (Adam, lr 1e-4, gradient clipping 1) ascending the clipped surrogate

       L = mean( min( ρ A', clip(ρ, 1−ε, 1+ε) A' ) ),  ρ = pθ/p_old,  A' = A − τ ln(pθ/p_base),  ε = 0.2

   which is the reference implementation's ``ppo_loss_fn`` (the KL term is evaluated at the current θ,
   so A' = R − b at every update).

τ = 0.1 for the energy reward and 2 for the FoM reward (Table S1). A ``PPOTrainer`` is a generator of
per-step logs (mean reward, mean E_hull / FoM, KL to base, fraction valid), so the CLI, the app and a
notebook can drive it, show progress and stop it between steps.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from core.checkpoint import Checkpoint, load_checkpoint, load_optimizer_state, save_checkpoint, save_optimizer_state
from core.config import ModelConfig
from core.data import ARRAY_KEYS
from core.errors import InvalidInputError
from core.logp import batched_logp, log_prob
from core.sampler import element_mask, resolve_spacegroups, sample_arrays, samples_from_arrays

# A reward maps structures (None where a sample could not be built) to one number each, and may add
# batch metrics to log, e.g. {"e_hull_mean": 0.12}.
RewardFn = Callable[[Sequence[object]], "np.ndarray | tuple[np.ndarray, dict]"]


def ppo_loss(config: ModelConfig, params, batch, old_logp, base_logp, advantages, eps_clip: float = 0.2,
             tau: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """Clipped PPO surrogate with the KL-to-base penalty (to be *maximised*); returns (loss, mean KL).

    ``batch`` = (G, L, XYZ, A, W) with normalised L; log-probabilities are totals in nats.
    """
    logp = log_prob(config, params, *batch).total
    kl = logp - base_logp
    adv = advantages - tau * kl
    ratio = jnp.exp(logp - old_logp)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - eps_clip, 1 + eps_clip) * adv)
    return jnp.mean(surrogate), jnp.mean(kl)


@dataclass
class PPOConfig:
    steps: int = 100               # sample-score-update rounds
    batch_size: int = 100          # crystals per round
    tau: float = 0.1               # KL weight: 0.1 energy reward, 2 FoM reward (paper)
    eps_clip: float = 0.2
    ppo_epochs: int = 3            # updates per sampled batch
    lr: float = 1e-4
    clip_norm: float = 1.0
    ema: float = 0.95              # baseline: b_k = ema * b_{k-1} + (1 - ema) * mean(R_k)
    temperature: float = 1.0
    spacegroups: object = "train"  # int, list, "1-230" string, or "train"
    elements: list | None = None
    exclude: list | None = None
    seed: int = 0
    save_every: int = 5


@dataclass
class PPOState:
    step: int = 0
    baseline: float | None = None
    elapsed_s: float = 0.0
    history: list = field(default_factory=list)


class PPOTrainer:
    """Fine-tune ``policy`` towards ``reward_fn`` while staying close to ``base``.

    Iterate ``trainer.run()`` to perform steps; each yields that step's log dict. ``trainer.checkpoint()``
    returns the current policy; with ``out`` set, checkpoints (+ optimizer state) are written there every
    ``save_every`` steps and at the end, and a new trainer on the same ``out`` resumes.
    """

    def __init__(self, policy: Checkpoint, reward_fn: RewardFn, cfg: PPOConfig | None = None, *,
                 base: Checkpoint | None = None, out: str | Path | None = None, meta: dict | None = None):
        self.cfg = cfg or PPOConfig()
        if self.cfg.batch_size < 2:
            raise InvalidInputError("PPO needs a batch of at least 2 crystals")
        self.config = policy.config
        self.base = base or policy
        self.reward_fn = reward_fn
        self.out = Path(out) if out else None
        self.meta = {**policy.meta, **(meta or {})}
        self.params = policy.params
        self.optimizer = optax.chain(optax.clip_by_global_norm(self.cfg.clip_norm), optax.adam(self.cfg.lr))
        self.opt_state = self.optimizer.init(self.params)
        self.state = PPOState()
        self.atom_mask = element_mask(self.config, self.cfg.elements, self.cfg.exclude)
        self._rng = np.random.default_rng(self.cfg.seed)
        if self.out and (self.out / "ppo_state.json").exists():
            self._resume()

        config, eps, tau = self.config, self.cfg.eps_clip, self.cfg.tau

        @jax.jit
        def update(params, opt_state, batch, old_logp, base_logp, adv):
            (loss, kl), grads = jax.value_and_grad(
                lambda p: ppo_loss(config, p, batch, old_logp, base_logp, adv, eps, tau), has_aux=True)(params)
            grads = jax.tree_util.tree_map(lambda g: -g, grads)  # ascend the objective
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, kl

        self._update = update

    # ---- persistence ----------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.config, self.params, source=str(self.out or ""), fmt="ours", meta=self._meta())

    def _meta(self) -> dict:
        return {**self.meta, "ppo_config": {k: v for k, v in asdict(self.cfg).items()},
                "ppo_steps": self.state.step, "ppo_wall_time_s": round(self.state.elapsed_s, 1),
                "ppo_last": self.state.history[-1] if self.state.history else None,
                "base": self.base.meta.get("name", self.base.source)}

    def save(self) -> None:
        if not self.out:
            return
        save_checkpoint(self.out, self.config, self.params, self._meta())
        save_optimizer_state(self.out, self.opt_state)
        (self.out / "ppo_state.json").write_text(json.dumps(asdict(self.state), indent=1, default=float) + "\n")

    def _resume(self) -> None:
        ck = load_checkpoint(self.out)
        self.params = ck.params
        self.opt_state = load_optimizer_state(self.out, self.opt_state)
        self.state = PPOState(**json.loads((self.out / "ppo_state.json").read_text()))
        self._rng = np.random.default_rng(self.cfg.seed + self.state.step)

    # ---- one round --------------------------------------------------------------------------------
    def step(self) -> dict:
        """Sample, score, update three times; return the step's log."""
        t0 = time.time()
        cfg, k = self.cfg, self.state.step
        policy_ck = Checkpoint(self.config, self.params, meta=self.meta)
        G = resolve_spacegroups(cfg.spacegroups, cfg.batch_size, self._rng, self.meta.get("spacegroup_distribution"))
        arrays = sample_arrays(policy_ck, G, temperature=cfg.temperature, atom_mask=self.atom_mask,
                               seed=cfg.seed * 100003 + k)
        samples = samples_from_arrays(arrays)
        out = self.reward_fn([s.structure for s in samples])
        rewards, extra = (out if isinstance(out, tuple) else (out, {}))
        rewards = np.asarray(rewards, np.float64)
        if rewards.shape != (len(samples),) or not np.all(np.isfinite(rewards)):
            raise InvalidInputError("the reward function must return one finite number per structure")
        batch = tuple(jnp.asarray(arrays[key]) for key in ARRAY_KEYS)
        old = jnp.asarray(batched_logp(self.config, self.params, *batch, batch_size=cfg.batch_size).total)
        base = jnp.asarray(batched_logp(self.base.config, self.base.params, *batch, batch_size=cfg.batch_size).total)
        kl_samples = np.asarray(old - base)
        R = rewards - cfg.tau * kl_samples
        b_prev = self.state.baseline
        baseline = float(R.mean()) if b_prev is None else cfg.ema * b_prev + (1 - cfg.ema) * float(R.mean())
        adv = jnp.asarray(rewards - baseline, old.dtype)
        for _ in range(cfg.ppo_epochs):
            self.params, self.opt_state, loss, kl = self._update(self.params, self.opt_state, batch, old, base, adv)
        self.state.step += 1
        self.state.baseline = baseline
        self.state.elapsed_s += time.time() - t0
        log = {"step": self.state.step, "reward_mean": float(rewards.mean()),
               "reward_std": float(rewards.std()), "objective_mean": float(R.mean()), "baseline": baseline,
               "kl": float(kl_samples.mean()), "valid_fraction": float(np.mean([s.structure is not None for s in samples])),
               "loss": float(loss), "seconds": round(time.time() - t0, 2), **{k: float(v) for k, v in extra.items()}}
        self.state.history.append(log)
        if self.out and (self.state.step % cfg.save_every == 0):
            self.save()
        return log

    def run(self, steps: int | None = None) -> Iterator[dict]:
        """Yield the log of each step until ``steps`` (default: the config's total) have been done."""
        target = self.cfg.steps if steps is None else self.state.step + steps
        try:
            while self.state.step < target:
                yield self.step()
        finally:
            self.save()


def write_history(path: str | Path, history: list[dict]) -> None:
    """The per-step logs as CSV (for plots and model cards)."""
    if not history:
        return
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
