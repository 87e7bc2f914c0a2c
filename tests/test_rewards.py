"""RL rewards from a score table: what judged rows earn, and that unjudgeable rows earn nothing (no model needed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.scoring.rewards import (
    UNJUDGED_EHULL_PENALTY_EV,
    ehull_reward_values,
    fom_reward_values,
    fom_stats,
    reward_stats,
)


def table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"formula": ["NaCl"] * n, "error": [None] * n, "struct_valid": [True] * n, "comp_valid": [True] * n, "energy_per_atom": [-5.0] * n}
    return pd.DataFrame({**base, **columns})


def test_ehull_reward_clips_below_hull_and_unjudged_rows_pay_the_worst_judged_value():
    t = table(e_above_hull=[0.05, 0.0, -0.05, 4.0, 12.0, -3.0, 0.02, None],
              hull_coverage=["full", "completed", "full", "full", "full", "full", "elements-only", None])
    reward = ehull_reward_values(t)
    # judged: -max(E_hull, 0); a slightly negative E_hull earns what the hull itself earns (0), no bonus
    np.testing.assert_allclose(reward[:4], [-0.05, 0.0, 0.0, -4.0])
    # 12 eV/atom (unphysical), -3 eV/atom (an artefact), elements-only hull, not scored: all pay the penalty
    np.testing.assert_allclose(reward[4:], [-UNJUDGED_EHULL_PENALTY_EV] * 4)
    assert reward.min() >= -UNJUDGED_EHULL_PENALTY_EV and reward.max() <= 0.0
    stats = reward_stats(t)
    assert stats["judged_fraction"] == pytest.approx(4 / 8)
    assert stats["stable_fraction"] == pytest.approx(3 / 8)    # 0.05, 0.0, -0.05 on judged hulls
    assert stats["e_hull_mean"] == pytest.approx((0.05 + 0.0 - 0.05 + 4.0) / 4)


def test_elemental_solids_earn_the_penalty_however_close_to_their_hull():
    """A generated O2 or Ni lies on its own elemental reference (a judged hull calls it stable), but it is a
    known element, not a candidate: the policy that went there (28 % O2) must not be paid for it."""
    t = table(formula=["O2", "Ni", "FeO", "LiCoO2", None], e_above_hull=[0.0, 0.01, 0.02, 0.0, 0.0],
              hull_coverage=["full"] * 5, fom_ev=[12.0, 0.0, 6.0, 8.0, 9.0])
    np.testing.assert_allclose(ehull_reward_values(t), [-UNJUDGED_EHULL_PENALTY_EV] * 2 + [-0.02, 0.0]
                               + [-UNJUDGED_EHULL_PENALTY_EV])
    np.testing.assert_allclose(fom_reward_values(t), [0.0, 0.0, 6.0, 8.0, 0.0])


def test_fom_reward_counts_only_stable_judged_rows_and_fades_above_the_threshold():
    t = table(fom_ev=[10.0, 10.0, 10.0, 80.0, 40.0, None],
              e_above_hull=[0.05, 0.15, 0.3, 46.0, 0.0, 0.0],
              hull_coverage=["full", "full", "full", "full", "partial", "full"],
              band_gap_ev=[2.0, 2.0, 2.0, 4.0, 4.0, 1.0], eps_elec=[5.0, 5.0, 5.0, 20.0, 10.0, None])
    np.testing.assert_allclose(fom_reward_values(t), [10.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    stats = fom_stats(t)
    assert stats["scored_fraction"] == pytest.approx(5 / 6) and stats["fom_mean"] == pytest.approx(30.0)
    empty = fom_stats(pd.DataFrame({"fom_ev": [None]}))
    assert math.isnan(empty["fom_mean"]) and empty["scored_fraction"] == 0.0
