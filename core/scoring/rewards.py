"""RL rewards on structures, built on the public ``score()`` table (``core.scoring.pipeline``).

A reward is any callable ``list[Structure | None] -> rewards`` (None: a sample that could not be
built); ``core.ppo.PPOTrainer`` takes one. The two built in here are the paper's:

* ``EhullReward``: r(x) = −E_hull(x) in eV/atom from an MLIP and a hull reference;
* ``FomReward``: r(x) = ε_elec(x) · E_g(x) in eV (figure of merit), from the band-gap and dielectric
  models, with no energy computed (stability is judged afterwards, as in the paper).

Each turns the score table into rewards with one module-level function (``ehull_reward_values``,
``fom_reward_values``), so how a scored row earns its reward is written once and can be tested on a
table without any model. Unjudgeable samples (unbuildable, unscorable) earn the penalty value.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.scoring.mlip import DEFAULT_MLIP

EHULL_INVALID_PENALTY = 5.0    # eV/atom: an unbuildable or unscorable sample counts as 5 eV/atom above the hull
EHULL_CLIP = (-1.0, 5.0)       # eV/atom: clip E_hull so a few outliers (or MLIP holes) cannot dominate a batch
FOM_INVALID_VALUE = 0.0        # eV: an unscorable sample has no figure of merit
STABLE_EV = 0.1                # eV/atom: "stable_fraction" counts E_hull below this


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A score column as floats (NaN where missing or None)."""
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(float)


def _mean(values: np.ndarray, ok: np.ndarray) -> float:
    return float(np.mean(values[ok])) if ok.any() else math.nan


def ehull_reward_values(table: pd.DataFrame) -> np.ndarray:
    """−clip(E_hull, EHULL_CLIP) per row (eV/atom); −EHULL_INVALID_PENALTY where E_hull is missing."""
    e_hull = _column(table, "e_above_hull")
    ok = np.isfinite(e_hull)
    return np.where(ok, -np.clip(np.nan_to_num(e_hull), *EHULL_CLIP), -EHULL_INVALID_PENALTY)


def ehull_stats(table: pd.DataFrame) -> dict[str, float]:
    """Batch metrics logged with the E_hull reward: mean E_hull (eV/atom) of the scored rows, the
    fraction below STABLE_EV, the fraction scored."""
    e_hull = _column(table, "e_above_hull")
    ok = np.isfinite(e_hull)
    return {"e_hull_mean": _mean(e_hull, ok), "stable_fraction": float(np.mean(ok & (e_hull < STABLE_EV))),
            "scored_fraction": float(ok.mean())}


def fom_reward_values(table: pd.DataFrame) -> np.ndarray:
    """FoM = ε_elec · E_g per row (eV); FOM_INVALID_VALUE where it is missing."""
    fom = _column(table, "fom_ev")
    return np.where(np.isfinite(fom), np.nan_to_num(fom), FOM_INVALID_VALUE)


def fom_stats(table: pd.DataFrame) -> dict[str, float]:
    """Batch metrics logged with the FoM reward, over the rows with a FoM: mean FoM (eV), band gap (eV)
    and ε_elec, and the fraction scored."""
    fom = _column(table, "fom_ev")
    ok = np.isfinite(fom)
    return {"fom_mean": _mean(fom, ok), "band_gap_mean": _mean(_column(table, "band_gap_ev"), ok),
            "eps_mean": _mean(_column(table, "eps_elec"), ok), "scored_fraction": float(ok.mean())}


def _score(structures: Sequence[Any], **kwargs: Any) -> pd.DataFrame:
    """The score table, one row per structure (None scores as an error row)."""
    from core.scoring.pipeline import score

    return score(list(structures), **kwargs)


class EhullReward:
    """r(x) = −E_hull(x) in eV/atom from an MLIP and a hull reference (``ehull_reward_values``)."""

    def __init__(self, mlip: str = DEFAULT_MLIP, hull: str = "bundled", relax: bool = False, device: str | None = None):
        self.mlip, self.hull, self.relax, self.device = mlip, hull, relax, device

    def __call__(self, structures: Sequence[Any]) -> tuple[np.ndarray, dict[str, float]]:
        table = _score(structures, mlip=self.mlip, relax=self.relax, hull=self.hull, properties=False,
                       device=self.device)
        return ehull_reward_values(table), ehull_stats(table)


class FomReward:
    """r(x) = ε_elec(x) · E_g(x) in eV (``fom_reward_values``), from the band-gap and dielectric models.

    Structures that cannot be scored (unbuildable, overlapping atoms, elements a model lacks) get
    FOM_INVALID_VALUE. No energy is computed (``score(mlip=None)``): stability is judged afterwards.
    """

    def __init__(self, device: str | None = None):
        self.device = device

    def __call__(self, structures: Sequence[Any]) -> tuple[np.ndarray, dict[str, float]]:
        table = _score(structures, mlip=None, hull=None, properties=True, device=self.device)
        return fom_reward_values(table), fom_stats(table)
