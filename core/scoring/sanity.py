"""Which rows of a score table can be judged, and which label each may carry.

A number is shown with what it was judged against; a row whose reference cannot judge it (hull
not covering its chemical system, a structure no physical model should see, a failed step) gets a
machine-readable flag here and never a "stable" or "best" label. Everything that decides this lives
in this module, so the pipeline's ``flags`` column, the app's default filters, the "best" picks and
the RL rewards agree.

Flags (codes, ``;``-joined in the ``flags`` column, ``""`` when none):

``error``            a scoring step failed (see the row's ``error``)
``invalid``          structure or composition invalid (``struct_valid`` / ``comp_valid`` False)
``unphysical``       energy per atom above 0 eV or E_hull above ``UNPHYSICAL_E_HULL_EV`` eV/atom
``below_hull``       more than ``BELOW_HULL_EV`` eV/atom below the hull: MLIP artefact or missing reference
``hull_lower_bound`` the hull does not fully cover the chemical system: E_hull is a lower bound
``gap_clipped``      the band-gap model gave a negative value, shown as 0 (raw value kept)

Rows with any flag in ``HIDDEN_BY_DEFAULT`` are hidden from plots, Pareto fronts and "best" picks
unless the user asks to see them, and are never called stable.

Rewards (pure functions of a score table, for RL and ranking): ``ehull_reward_values`` (−max(E_hull, 0)
on judged rows, −5 eV/atom otherwise) and ``fom_reward_values`` (FoM on judged rows with E_hull ≤
0.1 eV/atom, fading to 0 by 0.2 eV/atom, 0 otherwise); ``judged`` says which rows count.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.scoring.coverage import JUDGED_COVERAGE  # noqa: F401 - part of this module's contract
from core.scoring.metrics import STABILITY_THRESHOLD_EV

BELOW_HULL_EV = 0.1            # eV/atom below the hull: more than DFT-vs-MLIP scatter explains
UNPHYSICAL_E_HULL_EV = 5.0     # eV/atom above the hull: not a crystal any model should be trusted on

FLAG_TEXT = {
    "error": "not scored (see error)",
    "invalid": "structure or composition invalid",
    "unphysical": "unphysical structure (energy per atom > 0 eV or E_hull > 5 eV/atom)",
    "below_hull": "check: > 0.1 eV/atom below the hull (MLIP artefact or missing reference)",
    "hull_lower_bound": "hull incomplete in this chemical system: E_hull is a lower bound",
    "gap_clipped": "band gap clipped at 0 eV (model gave a negative value)",
}
HIDDEN_BY_DEFAULT = frozenset({"error", "invalid", "unphysical", "below_hull", "hull_lower_bound"})


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def row_flags(row: Mapping[str, Any]) -> list[str]:
    """Flag codes of one score-table row (a dict or a pandas row), in ``FLAG_TEXT`` order."""
    flags = []
    if _present(row.get("error")) and row.get("error"):
        flags.append("error")
    if row.get("struct_valid") is False or row.get("comp_valid") is False:
        flags.append("invalid")
    e_hull = _number(row.get("e_above_hull"))
    e_atom = _number(row.get("energy_per_atom"))
    if e_atom > 0.0 or e_hull > UNPHYSICAL_E_HULL_EV:
        flags.append("unphysical")
    if e_hull < -BELOW_HULL_EV:
        flags.append("below_hull")
    coverage = row.get("hull_coverage")
    if _present(coverage):
        if coverage not in JUDGED_COVERAGE:
            flags.append("hull_lower_bound")
    elif row.get("hull_elements_only") is True:
        flags.append("hull_lower_bound")
    if _number(row.get("band_gap_raw_ev")) < 0.0:
        flags.append("gap_clipped")
    return flags


def flag_column(table: pd.DataFrame) -> pd.Series:
    """The ``flags`` column of ``table``: ``;``-joined codes per row, ``""`` when none."""
    return pd.Series([";".join(row_flags(row)) for row in table.to_dict("records")], index=table.index, dtype=object)


def flag_words(codes: str | None) -> str:
    """Human words for a ``flags`` value (``""`` for none)."""
    return "; ".join(FLAG_TEXT.get(code, code) for code in (codes or "").split(";") if code)


def trusted(table: pd.DataFrame) -> pd.Series:
    """True for rows with no flag in ``HIDDEN_BY_DEFAULT``: the rows plots, fronts and "best" picks show."""
    flags = table["flags"] if "flags" in table else flag_column(table)
    return flags.fillna("").map(lambda f: not (set(f.split(";")) & HIDDEN_BY_DEFAULT)).astype(bool)


def may_call_stable(row: Mapping[str, Any], threshold: float = STABILITY_THRESHOLD_EV) -> bool:
    """Whether ``row`` may carry a "stable" label: judged (no hiding flag) and E_hull below ``threshold``."""
    if set(row_flags(row)) & HIDDEN_BY_DEFAULT:
        return False
    return _number(row.get("e_above_hull")) < threshold


def flag_notes(table: pd.DataFrame) -> list[str]:
    """One ``note:`` line per flag that occurs in ``table`` (count and words), for command-line output:
    e.g. ``note: 3 of 10 rows: hull incomplete in this chemical system: E_hull is a lower bound``."""
    flags = table["flags"] if "flags" in table else flag_column(table)
    counts = {code: int(flags.fillna("").map(lambda f, c=code: c in f.split(";")).sum()) for code in FLAG_TEXT}
    return [f"note: {count} of {len(table)} rows: {FLAG_TEXT[code]}" for code, count in counts.items() if count]


# ---------------------------------------------------------------- rows a reference can judge


def judged(table: pd.DataFrame) -> np.ndarray:
    """Rows whose E_hull the reference can judge: a finite E_hull, hull coverage "full" or "completed"
    (the ``hull_coverage`` column must be present: a table without it judges nothing) and no flag in
    ``HIDDEN_BY_DEFAULT`` (no error, valid, not unphysical, not > 0.1 eV/atom below the hull)."""
    if not len(table) or "hull_coverage" not in table or "e_above_hull" not in table:
        return np.zeros(len(table), dtype=bool)
    e_hull = pd.to_numeric(table["e_above_hull"], errors="coerce").to_numpy(float)
    covered = table["hull_coverage"].isin(JUDGED_COVERAGE).to_numpy(bool)
    return np.isfinite(e_hull) & covered & trusted(table).to_numpy(bool)
