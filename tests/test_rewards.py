"""RL rewards from a score table: −E_hull clipped, FoM, and what unjudgeable rows earn (no model needed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.scoring.rewards import (
    EHULL_INVALID_PENALTY,
    FOM_INVALID_VALUE,
    ehull_reward_values,
    ehull_stats,
    fom_reward_values,
    fom_stats,
)


def test_ehull_reward_is_minus_clipped_ehull_and_unscored_rows_pay_the_penalty():
    table = pd.DataFrame({"e_above_hull": [0.05, 12.0, -3.0, None, math.nan]})
    np.testing.assert_allclose(ehull_reward_values(table), [-0.05, -5.0, 1.0, -EHULL_INVALID_PENALTY, -5.0])
    stats = ehull_stats(table)
    assert stats["scored_fraction"] == pytest.approx(0.6)
    assert stats["stable_fraction"] == pytest.approx(0.4)      # 0.05 and -3.0 are below 0.1 eV/atom
    assert stats["e_hull_mean"] == pytest.approx((0.05 + 12.0 - 3.0) / 3)


def test_fom_reward_is_the_table_fom_and_unscored_rows_earn_nothing():
    table = pd.DataFrame({"fom_ev": [10.0, None], "band_gap_ev": [2.0, 1.0], "eps_elec": [5.0, None]})
    np.testing.assert_allclose(fom_reward_values(table), [10.0, FOM_INVALID_VALUE])
    assert fom_stats(table) == {"fom_mean": 10.0, "band_gap_mean": 2.0, "eps_mean": 5.0, "scored_fraction": 0.5}
    empty = fom_stats(pd.DataFrame({"fom_ev": [None]}))
    assert math.isnan(empty["fom_mean"]) and empty["scored_fraction"] == 0.0
