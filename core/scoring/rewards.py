"""RL rewards on structures, built on the public ``score()`` table (``core.scoring.pipeline``).

A reward is any callable ``list[Structure | None] -> (rewards, stats)`` (None: a sample that could not be
built); ``core.ppo.PPOTrainer`` takes one. The two built in here are the paper's, made so they cannot be
gamed (a model finds every blind spot of its reward):

* ``EhullReward``: r(x) = −max(E_hull(x), 0) in eV/atom on rows the hull can judge
  (``core.scoring.sanity.judged``: hull coverage full or completed, no error, valid, not unphysical, not
  more than 0.1 eV/atom below the hull) that hold two or more elements; every other sample (an elemental
  solid included: it is a known element, not a candidate) gets −``UNJUDGED_EHULL_PENALTY_EV``, the worst
  a judged row can score, so moving into chemical systems the reference cannot judge never pays, and an
  MLIP artefact below the hull earns no more than being on it;
* ``FomReward``: ε_elec(x) · E_g(x) in eV, counted in full only on judged rows with E_hull ≤ 0.1 eV/atom
  and fading to 0 at 0.2 eV/atom; 0 (the least a FoM can be) for the rest. So it needs an energy and a
  hull, unlike the paper's property-only reward, whose optimum was a few unstable rock salts.

Each turns the score table into rewards with one module-level function (``ehull_reward_values``,
``fom_reward_values``), so how a scored row earns its reward is written once and can be tested on a
table without any model. ``hull="bundled+complete"`` completes uncovered systems and so judges more rows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.scoring.metrics import STABILITY_THRESHOLD_EV
from core.scoring.mlip import DEFAULT_MLIP
from core.scoring.sanity import UNPHYSICAL_E_HULL_EV, judged, may_call_stable

UNJUDGED_EHULL_PENALTY_EV = UNPHYSICAL_E_HULL_EV  # eV/atom: an unjudged row scores as the worst judged one
FOM_FADE_EV = 0.1   # eV/atom above the stability threshold over which the FoM reward fades to 0



def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A score column as floats (NaN where missing or None)."""
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(float)


def _mean(values: np.ndarray, ok: np.ndarray) -> float:
    return float(np.mean(values[ok])) if ok.any() else math.nan


def compound_rows(table: pd.DataFrame) -> np.ndarray:
    """Rows whose ``formula`` holds two or more elements. A generated elemental solid (O2, Ni, Fe) sits on
    its own elemental reference, so a judged hull calls it stable, yet it is a known element, not a
    candidate material: a policy trained on 100 steps of −max(E_hull, 0) without this rule turned 28 % of
    its samples into O2 and 62 distinct formulas of 300 (``bench/hull_validation.md``)."""
    if not len(table) or "formula" not in table:
        return np.zeros(len(table), dtype=bool)
    return np.array([_element_count(f) >= 2 for f in table["formula"]], dtype=bool)


def _element_count(formula: Any) -> int:
    from pymatgen.core import Composition

    try:
        return len(Composition(str(formula)).elements) if isinstance(formula, str) and formula else 0
    except (ValueError, KeyError):
        return 0


def ehull_reward_values(table: pd.DataFrame) -> np.ndarray:
    """RL reward per row (eV/atom, higher is better) from a score table with ``e_above_hull`` and
    ``hull_coverage`` (``core.scoring.pipeline.score``; use ``hull="bundled+complete"`` to judge more rows).

    * judged rows (``judged``): −max(E_hull, 0), so being below the hull earns no more than being on it
      and an MLIP artefact is not a target; E_hull ≤ ``UNPHYSICAL_E_HULL_EV`` there, so the reward is in [−5, 0];
    * every other row (not scored, invalid, unphysical, > 0.1 eV/atom below the hull, hull not covering its
      system, a single element: ``compound_rows``): −``UNJUDGED_EHULL_PENALTY_EV`` = −5 eV/atom, the worst a
      judged row can score, so going where the reference is blind never pays, nor does regenerating an element.
    """
    ok = judged(table) & compound_rows(table)
    return np.where(ok, -np.maximum(np.nan_to_num(_column(table, "e_above_hull")), 0.0), -UNJUDGED_EHULL_PENALTY_EV)


def fom_reward_values(table: pd.DataFrame, threshold: float = STABILITY_THRESHOLD_EV,
                      fade: float = FOM_FADE_EV) -> np.ndarray:
    """Stability-aware figure-of-merit reward per row (eV): FoM = ε_elec · E_g counted in full on judged
    rows with E_hull ≤ ``threshold`` (eV/atom), fading linearly to 0 at ``threshold + fade``, and 0 — the
    least any row can score, FoM being ≥ 0 — on rows that are not judged (``judged``), are a single element
    (``compound_rows``) or have no FoM. So a
    high FoM of an unstable, unphysical (E_hull 46 eV/atom) or unjudgeable structure earns nothing.

    Needs ``fom_ev``, ``e_above_hull`` and ``hull_coverage`` (score with properties and a hull).
    """
    if not len(table) or "fom_ev" not in table:
        return np.zeros(len(table))
    ok = judged(table) & compound_rows(table)
    if not ok.any():
        return np.zeros(len(table))
    fom = np.maximum(np.nan_to_num(_column(table, "fom_ev")), 0.0)
    e_hull = np.nan_to_num(_column(table, "e_above_hull"), nan=np.inf)
    gate = np.clip(1.0 - (e_hull - threshold) / fade, 0.0, 1.0)
    return np.where(ok, fom * gate, 0.0)


def reward_stats(table: pd.DataFrame) -> dict[str, float]:
    """Per-batch statistics for an RL log: judged fraction, stable fraction (``may_call_stable`` over all
    rows) and mean E_hull (eV/atom) of the judged rows."""
    ok = judged(table)
    n = len(table)
    stable = [may_call_stable(row) for row in table.to_dict("records")] if n else []
    return {"judged_fraction": float(ok.mean()) if n else math.nan,
            "stable_fraction": float(np.mean(stable)) if n else math.nan,
            "e_hull_mean": _mean(_column(table, "e_above_hull"), ok)}


def fom_stats(table: pd.DataFrame) -> dict[str, float]:
    """Batch metrics logged with the FoM reward: ``reward_stats`` plus, over the rows with a FoM, mean FoM
    (eV), band gap (eV) and ε_elec, and the fraction with a FoM."""
    fom = _column(table, "fom_ev")
    ok = np.isfinite(fom)
    return {**reward_stats(table), "fom_mean": _mean(fom, ok), "band_gap_mean": _mean(_column(table, "band_gap_ev"), ok),
            "eps_mean": _mean(_column(table, "eps_elec"), ok), "scored_fraction": float(ok.mean()) if len(table) else math.nan}


def _score(structures: Sequence[Any], **kwargs: Any) -> pd.DataFrame:
    """The score table, one row per structure (None scores as an error row)."""
    from core.scoring.pipeline import score

    return score(list(structures), **kwargs)


class EhullReward:
    """r(x) = −max(E_hull(x), 0) in eV/atom on judged rows, −5 otherwise (``ehull_reward_values``)."""

    def __init__(self, mlip: str = DEFAULT_MLIP, hull: str = "bundled", relax: bool = False, device: str | None = None):
        self.mlip, self.hull, self.relax, self.device = mlip, hull, relax, device

    def __call__(self, structures: Sequence[Any]) -> tuple[np.ndarray, dict[str, float]]:
        table = _score(structures, mlip=self.mlip, relax=self.relax, hull=self.hull, properties=False,
                       device=self.device)
        return ehull_reward_values(table), reward_stats(table)


class FomReward:
    """Stability-aware FoM reward in eV (``fom_reward_values``): ε_elec · E_g from the band-gap and dielectric
    models, counted only where a judged hull puts the structure within 0.1 eV/atom (fading to 0 at 0.2)."""

    def __init__(self, mlip: str = DEFAULT_MLIP, hull: str = "bundled", device: str | None = None):
        self.mlip, self.hull, self.device = mlip, hull, device

    def __call__(self, structures: Sequence[Any]) -> tuple[np.ndarray, dict[str, float]]:
        table = _score(structures, mlip=self.mlip, hull=self.hull, properties=True, device=self.device)
        return fom_reward_values(table), fom_stats(table)
