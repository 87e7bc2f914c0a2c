"""Rewards that cannot be gamed: unjudged rows never earn more than the worst judged row, below-hull
values earn no more than on-hull ones, and a high FoM of an unstable or unphysical row earns nothing."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.scoring import rewards, sanity


def table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"formula": ["NaCl"] * n, "error": [None] * n, "struct_valid": [True] * n, "comp_valid": [True] * n}
    return pd.DataFrame({**base, **columns})


def test_ehull_reward_clips_below_hull_and_penalises_the_unjudged():
    t = table(e_above_hull=[0.3, -0.05, -2.1, 0.0, 0.02, math.nan, 7.0],
              hull_coverage=["full", "full", "full", "partial", "elements-only", None, "completed"])
    t.loc[5, "error"] = "energy: isolated atom"
    reward = rewards.ehull_reward_values(t)
    # judged: rows 0, 1 -> -0.3, -0 (clipped); the rest (far below, partial, elements-only, failed, unphysical) -5
    assert reward == pytest.approx([-0.3, 0.0, -5.0, -5.0, -5.0, -5.0, -5.0])
    assert list(sanity.judged(t)) == [True, True, False, False, False, False, False]
    # no row anywhere on the judged range scores below the penalty: an unjudged sample is never a bonus
    worst_judged = rewards.ehull_reward_values(table(e_above_hull=[sanity.UNPHYSICAL_E_HULL_EV], hull_coverage=["full"]))
    assert worst_judged[0] >= -rewards.UNJUDGED_EHULL_PENALTY_EV


def test_table_without_coverage_judges_nothing():
    t = table(e_above_hull=[0.0, 0.05])
    assert list(rewards.ehull_reward_values(t)) == [-5.0, -5.0]


def test_fom_reward_needs_a_stable_judged_row():
    t = table(e_above_hull=[0.05, 0.15, 0.3, 46.0, 0.0, 0.0],
              hull_coverage=["full", "full", "full", "full", "partial", "completed"],
              fom_ev=[10.0, 10.0, 10.0, 85.0, 50.0, math.nan])
    reward = rewards.fom_reward_values(t)
    assert reward == pytest.approx([10.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    assert np.all(reward >= 0.0)   # 0 is the least any row scores, and what every unjudged row gets


def test_reward_stats():
    t = table(e_above_hull=[0.05, 0.5, 0.0], hull_coverage=["full", "full", "partial"])
    stats = rewards.reward_stats(t)
    assert stats["judged_fraction"] == pytest.approx(2 / 3) and stats["stable_fraction"] == pytest.approx(1 / 3)
    assert stats["e_hull_mean"] == pytest.approx(0.275)
