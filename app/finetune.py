"""Fine-tune page logic: a short, CPU-sized PPO run as a background job (``core.ppo``).

``ppo_steps`` drives ``core.ppo.PPOTrainer`` (the same trainer as ``python -m core rl``) and yields
its log dict per PPO step (mean reward, KL to the base model, mean E_hull or FoM, buildable fraction,
seconds); the page draws them as they arrive. The policy is saved under the app data directory
(``app.checkpoints.finetuned_dir``), where the checkpoint pickers find it; a later run on the same
folder continues it (the trainer resumes parameters, optimizer state and baseline).
"""
from __future__ import annotations

import contextlib
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from app.checkpoints import finetuned_dir

def _reward_labels() -> dict[str, str]:
    """What each built-in reward pays, with the core's own constants (eV/atom, eV)."""
    from core.scoring import rewards

    penalty = rewards.UNJUDGED_EHULL_PENALTY_EV
    stable = rewards.STABILITY_THRESHOLD_EV
    return {
        "ehull": (f"stability: r = −max(E_hull, 0) eV/atom where the hull can judge the sample (below-hull values "
                  f"count as 0); unjudged or unscorable: r = −{penalty:g}"),
        "fom": (f"dielectric: r = FoM = ε_elec·E_g (eV) where a judged hull puts E_hull ≤ {stable:g} eV/atom, fading "
                f"to 0 at {stable + rewards.FOM_FADE_EV:g}; otherwise r = 0"),
    }


REWARDS = _reward_labels()
COMPILING = ("step 1: compiling the sampler and the PPO update (first step only, tens of seconds on a CPU), "
             "then sampling, scoring and updating")
DEFAULT_TAU = {"ehull": 0.1, "fom": 2.0}   # the paper's KL weights (Table S1)
MAX_STEPS = 50
MAX_BATCH = 64
# per-step log columns shown in the page's table (``PPOTrainer.step`` logs; reward-specific ones when present)
LOG_COLUMNS = {"step": "Step", "reward_mean": "Mean reward", "kl": "KL to base (nats, sample estimate)", "valid_fraction": "Buildable",
               "e_hull_mean": "Mean E_hull (eV/atom)", "stable_fraction": "Stable (< 0.1 eV/atom)",
               "fom_mean": "Mean FoM (eV)", "judged_fraction": "Judged by the hull", "scored_fraction": "Scored", "seconds": "Seconds"}
FRACTION_COLUMNS = ("valid_fraction", "stable_fraction", "judged_fraction", "scored_fraction")   # shown as percentages


def _ehull_reward(mlip: str, hull: str):
    from core.scoring.rewards import EhullReward

    return EhullReward(mlip=mlip, hull=hull)


def _fom_reward(mlip: str, hull: str):
    from core.scoring.rewards import FomReward

    return FomReward(mlip=mlip, hull=hull)


# reward key -> factory(mlip name, hull kind) -> callable on structures (tests swap in fast fakes)
REWARD_FACTORIES = {"ehull": _ehull_reward, "fom": _fom_reward}


def reward_factory(reward: str):
    """The factory for ``reward`` (a test server replaces them all through ``app.harness.use_stand_ins``)."""
    return REWARD_FACTORIES[reward]


@dataclass(frozen=True)
class FineTuneRequest:
    reward: str = "ehull"
    steps: int = 5
    batch_size: int = 8
    tau: float = 0.1
    lr: float = 1e-4
    spacegroup: int | str = 225
    seed: int = 0
    name: str = ""

    def check(self) -> None:
        from core.errors import InvalidInputError

        if self.reward not in REWARDS:
            raise InvalidInputError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InvalidInputError(f"steps must be 1–{MAX_STEPS} in the browser; use `python -m core rl` for longer runs")
        if not 2 <= self.batch_size <= MAX_BATCH:
            raise InvalidInputError(f"batch size must be 2–{MAX_BATCH} in the browser")
        if not self.tau >= 0 or not self.lr > 0:
            raise InvalidInputError("τ must be ≥ 0 and the learning rate > 0")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name or "x"):
            raise InvalidInputError("checkpoint name: letters, digits, '.', '_' and '-' only")


def default_name(policy_name: str, reward: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", policy_name).strip("-") or "model"
    return f"{stem}-ppo-{reward}-{time.strftime('%Y%m%d-%H%M%S')}"


def output_dir(name: str) -> Path:
    return finetuned_dir() / name


def name_taken(name: str) -> bool:
    """A checkpoint folder of that name already exists among the fine-tuned ones."""
    return bool(name) and output_dir(name).exists()


def log_table(history: list[dict]):
    """The per-step logs as a table with the LOG_COLUMNS present (labels with units)."""
    import pandas as pd

    frame = pd.DataFrame(history)
    return frame[[c for c in LOG_COLUMNS if c in frame]].rename(columns=LOG_COLUMNS)


def ppo_steps(policy, request: FineTuneRequest, *, mlip: str = "m3gnet", hull: str = "bundled",
              resume: bool = False) -> Iterator[dict]:
    """Run ``request.steps`` PPO steps from ``policy`` (also the KL base) and yield each step's log.

    Saves to ``output_dir(request.name)`` every ``request.steps`` steps and when stopped or finished.
    With ``resume`` the folder must hold an earlier run from the same ``policy``, which continues;
    otherwise the name must be new. A run that fails before its first step leaves no folder behind.

    Raises:
        InvalidInputError: bad settings, a new run on a taken name, or resuming a folder that is not a run.
    """
    from core.errors import InvalidInputError
    from core.ppo import PPOConfig, PPOTrainer

    request.check()
    name = request.name or default_name(policy.name, request.reward)
    out = output_dir(name)
    if resume and not (out / "ppo_state.json").exists():
        raise InvalidInputError(f"{out} holds no fine-tuning run to continue")
    if not resume and out.exists():
        raise InvalidInputError(f"a checkpoint named {name!r} already exists in {out.parent}; choose another name")
    reward = reward_factory(request.reward)(mlip, hull)
    cfg = PPOConfig(steps=request.steps, batch_size=request.batch_size, tau=request.tau, lr=request.lr,
                    spacegroups=request.spacegroup, seed=request.seed, save_every=max(1, request.steps))
    trainer = PPOTrainer(policy, reward, cfg, base=policy, out=out,
                         meta={"name": name, "finetuned_from": policy.name, "reward": REWARDS[request.reward]})
    done = 0
    try:
        with contextlib.closing(trainer.run(request.steps)) as logs:   # stopping here saves the policy at once
            for log in logs:
                done += 1
                yield log
    except Exception:
        if done == 0 and not resume:
            shutil.rmtree(out, ignore_errors=True)   # nothing learned: no half-made checkpoint in the pickers
        raise


def with_phases(logs: Iterator[dict], job, steps: int) -> Iterator[dict]:
    """PPO step logs, telling ``job`` what it waits for: compiling during step 1, then step k of n."""
    job.report(0, steps, COMPILING)
    for k, log in enumerate(logs, 1):
        job.report(k, steps, f"PPO step {k + 1} of {steps}: sampling, scoring, updating" if k < steps else "saving")
        yield log
