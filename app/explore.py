"""Explore page logic: filters on scored structures, the ranking of choices, and plot clicks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from app.pool import numeric


CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


@dataclass(frozen=True)
class Filters:
    """Which scored structures to show.

    ``ehull_max`` in eV/atom: judged rows with a larger E_hull are hidden (None: no limit). Rows the
    scorer flagged (``app.flags``: unphysical, below the hull, hull not judging the system, invalid,
    failed) are hidden unless ``show_flagged``; shown, all of them are (their E_hull is not judged). The chemist's filters: ``runs`` (names; empty = all),
    ``contains`` (every one of these elements), ``excludes`` (none of these), ``formula`` (case-
    insensitive substring of the reduced formula), ``crystal_systems`` and ``spacegroups`` (numbers;
    empty = all; the space group found by spglib when scored, else the generated one).
    """

    ehull_max: float | None = None
    keep_missing_ehull: bool = True   # rows whose E_hull could not be computed
    valid_only: bool = False          # structure and composition valid
    unique_only: bool = False
    novel_only: bool = False
    show_flagged: bool = False
    runs: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    formula: str = ""
    crystal_systems: tuple[str, ...] = ()
    spacegroups: tuple[int, ...] = ()


def _truthy(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].map(lambda v: v is True or v == 1).to_numpy(dtype=bool).copy()


def spacegroup_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Space group per row: spglib's (``spacegroup_found``) when scored, else the generated one (NaN if neither)."""
    found = numeric(frame, "spacegroup_found")
    return np.where(np.isfinite(found), found, numeric(frame, "spacegroup"))


def crystal_systems(frame: pd.DataFrame) -> np.ndarray:
    """Crystal system per row ('cubic', …; '' when the space group is unknown)."""
    from core.wyckoff import crystal_system

    return np.array([crystal_system(int(g)) if np.isfinite(g) and 1 <= g <= 230 else "" for g in spacegroup_numbers(frame)],
                    dtype=object)


def chemistry_mask(frame: pd.DataFrame, f: Filters) -> np.ndarray:
    """Rows passing the run, element, formula, crystal-system and space-group filters (any row, scored or not)."""
    keep = np.ones(len(frame), dtype=bool)
    if f.runs and "run" in frame:
        keep &= frame["run"].isin(f.runs).to_numpy(dtype=bool)
    if (f.contains or f.excludes) and "elements" in frame:
        want, avoid = set(f.contains), set(f.excludes)
        keep &= frame["elements"].map(lambda els: want <= set(els or ()) and not (avoid & set(els or ()))).to_numpy(bool)
    if f.formula.strip() and "formula" in frame:
        needle = f.formula.strip().lower()
        keep &= frame["formula"].fillna("").astype(str).str.lower().str.contains(needle, regex=False).to_numpy(bool)
    if f.crystal_systems:
        keep &= np.isin(crystal_systems(frame), list(f.crystal_systems))
    if f.spacegroups:
        keep &= np.isin(spacegroup_numbers(frame), [float(g) for g in f.spacegroups])
    return keep


@dataclass(frozen=True)
class FilterCounts:
    """What the filters left out of the scored rows (for the caption under them)."""

    scored: int = 0
    flagged: int = 0          # scored rows the scorer flagged (hidden unless shown)
    shown: int = 0


def apply_filters(frame: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """Rows of a ``Pool.scored_frame`` that pass the filters (scored rows only), with ``app.flags`` columns."""
    from app.flags import annotate

    frame = annotate(frame) if "trusted" not in frame else frame
    keep = frame["scored"].to_numpy(dtype=bool).copy() if "scored" in frame else np.ones(len(frame), bool)
    if not f.show_flagged:
        keep &= frame["trusted"].to_numpy(dtype=bool)
    e = numeric(frame, "e_above_hull")
    flagged = ~frame["trusted"].to_numpy(dtype=bool)   # shown on request; their E_hull is not judged, so not limited
    if f.ehull_max is not None:
        keep &= (e <= f.ehull_max) | (~np.isfinite(e) & f.keep_missing_ehull) | flagged
    elif not f.keep_missing_ehull:
        keep &= np.isfinite(e) | flagged
    if f.valid_only:
        keep &= _truthy(frame, "struct_valid") & _truthy(frame, "comp_valid")
    if f.unique_only:
        keep &= _truthy(frame, "unique")
    if f.novel_only:
        keep &= _truthy(frame, "novel")
    keep &= chemistry_mask(frame, f)
    return frame[keep]


def filter_counts(frame: pd.DataFrame, shown: pd.DataFrame) -> FilterCounts:
    """Scored rows, flagged ones among them, and rows shown (``frame`` annotated by ``app.flags.annotate``)."""
    scored = frame[frame["scored"]] if "scored" in frame else frame
    return FilterCounts(len(scored), int((~scored["trusted"].astype(bool)).sum()), len(shown))


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
        parts.append(f"E_hull {round(float(e), 3) + 0.0:.3f} eV/atom")
    if row.get("trusted") is False or row.get("trusted") is np.False_:
        parts.append("flagged")
    return " · ".join(parts)


def ranked_ids(frame: pd.DataFrame) -> list[int]:
    """Ids sorted for "best" picks: trusted rows (``app.flags``) first, then FoM (eV) descending, rows
    without FoM last (then by id); a flagged row never comes before a trusted one."""
    fom = numeric(frame, "fom_ev")
    trusted = frame["trusted"].to_numpy(dtype=bool) if "trusted" in frame else np.ones(len(frame), bool)
    order = np.lexsort((frame["id"].to_numpy(), -np.nan_to_num(fom, nan=-np.inf), ~trusted))
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
    """The Pareto-front rows (max E_g, max ε_elec) among the rows that may stand on it (``app.flags.front_eligible``:
    no hiding flag, not a metal), sorted by FoM descending."""
    from app.flags import annotate, front_eligible
    from core.scoring.pareto import pareto_mask

    frame = annotate(frame) if "trusted" not in frame else frame
    eligible = frame[front_eligible(frame)]
    mask = pareto_mask(numeric(eligible, "band_gap_ev"), numeric(eligible, "eps_elec"))
    front = eligible[mask]
    return front.sort_values("fom_ev", ascending=False, na_position="last") if "fom_ev" in front else front
