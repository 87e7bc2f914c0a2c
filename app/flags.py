"""Which scored rows the app's plots, fronts and "best" picks trust by default (``core.scoring.sanity``).

The scorer decides what a row's reference can judge (``core.scoring.sanity``: flags such as
``unphysical``, ``below_hull``, ``hull_lower_bound``); this module only applies that decision to the
app's tables. It works whether or not the score rows carry a ``flags`` column: a missing or empty
value is derived from the row's other columns, so a scorer that does not write flags yet is judged
by the same rules.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from app.pool import numeric
from core.scoring.sanity import HIDDEN_BY_DEFAULT, flag_words, may_call_stable, row_flags

METAL_GAP_EV = 0.0   # eV: a band gap at or below this is a metal (or a clipped negative): no dielectric trade-off


def flag_codes(frame: pd.DataFrame) -> pd.Series:
    """The ``;``-joined flag codes per row: the scorer's ``flags`` where it wrote them, derived otherwise.

    Unscored rows get ``""`` (nothing to judge yet; filters keep them out of plots anyway).
    """
    given = frame["flags"] if "flags" in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
    scored = frame["scored"] if "scored" in frame else pd.Series(True, index=frame.index)
    out = []
    for row, value, is_scored in zip(frame.to_dict("records"), given, scored):   # records: plain Python values
        if isinstance(value, str):
            out.append(value)
        elif not is_scored:
            out.append("")
        else:
            out.append(";".join(row_flags(row)))
    return pd.Series(out, index=frame.index, dtype=object)


def hidden_mask(codes: pd.Series) -> np.ndarray:
    """True where a row carries a flag that hides it by default (``HIDDEN_BY_DEFAULT``)."""
    return codes.map(lambda f: bool(set(f.split(";")) & HIDDEN_BY_DEFAULT)).to_numpy(dtype=bool)


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``flags`` (codes), ``flag_text`` (words), ``trusted`` (no hiding flag) and
    ``hull_coverage`` (``app.tables.hull_coverage``) columns."""
    from app.tables import hull_coverage

    out = frame.copy()
    out["hull_coverage"] = hull_coverage(frame)
    codes = flag_codes(frame)
    out["flags"] = codes
    out["flag_text"] = codes.map(flag_words)
    out["trusted"] = ~hidden_mask(codes)
    return out


def front_eligible(frame: pd.DataFrame) -> np.ndarray:
    """Rows that may stand on the E_g–ε_elec Pareto front: trusted, and not a metal (E_g > ``METAL_GAP_EV``).

    Metals get huge ε_elec predictions with a zero gap and would otherwise always sit on the front.
    """
    trusted = frame["trusted"].to_numpy(dtype=bool) if "trusted" in frame else ~hidden_mask(flag_codes(frame))
    return trusted & (numeric(frame, "band_gap_ev") > METAL_GAP_EV)


def flag_summary(frame: pd.DataFrame) -> str:
    """'3 unphysical structure (…), 2 hull incomplete …' for the hidden rows of an annotated frame ('' if none)."""
    from collections import Counter

    hidden = frame.loc[~frame["trusted"].astype(bool), "flags"] if "trusted" in frame else pd.Series(dtype=object)
    counts = Counter(code for codes in hidden for code in codes.split(";") if code in HIDDEN_BY_DEFAULT)
    return ", ".join(f"{n} {flag_words(code)}" for code, n in counts.most_common())


def stable_word(row) -> str | None:
    """'stable' only where ``may_call_stable`` allows it; otherwise why the row cannot be called stable."""
    if may_call_stable(row):
        return "stable"
    words = flag_words(";".join(c for c in row_flags(row) if c in HIDDEN_BY_DEFAULT))
    return f"not judged: {words}" if words else None
