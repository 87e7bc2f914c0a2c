"""Explore page logic: filters on scored structures, the ranking of choices, and plot clicks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from app.pool import numeric


@dataclass(frozen=True)
class Filters:
    """Which scored structures to show. ``ehull_max`` in eV/atom (None: no limit)."""

    ehull_max: float | None = None
    keep_missing_ehull: bool = True   # rows whose E_hull could not be computed
    valid_only: bool = False          # structure and composition valid
    unique_only: bool = False
    novel_only: bool = False


def _truthy(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].map(lambda v: v is True or v == 1).to_numpy(dtype=bool).copy()


def apply_filters(frame: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """Rows of a ``Pool.scored_frame`` that pass the filters (scored rows only)."""
    keep = frame["scored"].to_numpy(dtype=bool).copy() if "scored" in frame else np.ones(len(frame), bool)
    if f.ehull_max is not None:
        e = numeric(frame, "e_above_hull")
        keep &= (e <= f.ehull_max) | (~np.isfinite(e) & f.keep_missing_ehull)
    elif not f.keep_missing_ehull:
        keep &= np.isfinite(numeric(frame, "e_above_hull"))
    if f.valid_only:
        keep &= _truthy(frame, "struct_valid") & _truthy(frame, "comp_valid")
    if f.unique_only:
        keep &= _truthy(frame, "unique")
    if f.novel_only:
        keep &= _truthy(frame, "novel")
    return frame[keep]


def has_novelty(frame: pd.DataFrame) -> bool:
    return "novel" in frame and frame["novel"].map(lambda v: isinstance(v, (bool, np.bool_))).any()


def choice_label(row: pd.Series) -> str:
    """'#12 CsF · FoM 14.20 eV · E_hull 0.031 eV/atom' for the structure picker."""
    parts = [f"#{int(row['id'])} {row['formula']}"]
    fom = row.get("fom_ev")
    if fom is not None and not (isinstance(fom, float) and math.isnan(fom)):
        parts.append(f"FoM {float(fom):.2f} eV")
    e = row.get("e_above_hull")
    if e is not None and not (isinstance(e, float) and math.isnan(e)):
        parts.append(f"E_hull {float(e):.3f} eV/atom")
    return " · ".join(parts)


def ranked_ids(frame: pd.DataFrame) -> list[int]:
    """Ids sorted by FoM (eV) descending, rows without FoM last (then by id)."""
    fom = numeric(frame, "fom_ev")
    order = np.lexsort((frame["id"].to_numpy(), -np.nan_to_num(fom, nan=-np.inf)))
    return [int(frame["id"].iloc[k]) for k in order]


def clicked_id(event: Any) -> int | None:
    """The pool id of the first clicked/selected point of a ``st.plotly_chart`` selection event."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        try:
            points = event.selection.points
        except AttributeError:
            return None
    for p in points or []:
        custom = p.get("customdata")
        if custom is None:
            continue
        value = custom[0] if isinstance(custom, (list, tuple)) else custom
        try:
            return int(float(value))
        except (TypeError, ValueError):
            continue
    return None


def pareto_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The Pareto-front rows (max E_g, max ε_elec) sorted by FoM descending."""
    from core.scoring.pareto import pareto_mask

    mask = pareto_mask(numeric(frame, "band_gap_ev"), numeric(frame, "eps_elec"))
    front = frame[mask]
    return front.sort_values("fom_ev", ascending=False, na_position="last") if "fom_ev" in front else front
