"""Shortlist from the app: adding a structure from Explore, editing notes/tags, exporting.

Storage is ``core.shortlist.Shortlist`` (SQLite under the app data directory, safe with several
sessions); this module turns a pool entry's score row into the stored properties and lays out the
widgets.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import streamlit as st

from app.widgets import show_error

STORED_PROPERTIES = ("energy_per_atom", "e_form_per_atom", "e_above_hull", "hull_reference", "band_gap_ev",
                     "eps_elec", "fom_ev", "struct_valid", "comp_valid", "unique", "novel", "relaxed", "logp")
SHOWN = ("id", "formula", "spacegroup", "spacegroup_symbol", "nsites", "e_above_hull", "band_gap_ev", "eps_elec",
         "fom_ev", "source", "notes", "tags", "added_at")


def unavailable() -> str | None:
    try:
        import core.shortlist  # noqa: F401
    except ImportError:
        return "The shortlist needs core/shortlist.py, which is not in this checkout yet."
    return None


def store():
    from core.shortlist import Shortlist

    return Shortlist()


def properties_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The score values worth keeping (plain Python, no NaN), units in the key names."""
    out = {}
    for key in STORED_PROPERTIES:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def tags_text(tags) -> str:
    return ", ".join(tags) if isinstance(tags, (list, tuple)) else (tags or "")


def add_form(entry, row: Mapping[str, Any], key: str) -> None:
    """Notes, tags and an 'Add to shortlist' button for one pool entry."""
    missing = unavailable()
    if missing:
        st.info(missing)
        return
    with st.form(f"{key}-form", border=True):
        st.markdown("**Keep this candidate**")
        c1, c2 = st.columns([3, 2])
        notes = c1.text_input("Notes", key=f"{key}-notes", placeholder="why it is interesting")
        tags = c2.text_input("Tags (comma-separated)", key=f"{key}-tags", placeholder="fluoride, perovskite")
        submitted = st.form_submit_button("Add to shortlist", icon=":material/bookmark_add:", type="primary")
    if not submitted:
        return
    from core.shortlist import DuplicateEntryError

    try:
        new_id = store().add(entry.structure, properties=properties_of(row), source=entry.source,
                             token_string=entry.token_string, notes=notes, tags=tags)
    except DuplicateEntryError as exc:
        st.info(f"Already kept: {exc}", icon="🔖")
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "cannot add to the shortlist")
    else:
        st.success(f"Added {entry.formula} to the shortlist as #{new_id}.", icon="🔖")


def editable_frame(listing: pd.DataFrame) -> pd.DataFrame:
    """The shortlist as shown in the editor: a 'select' column, the SHOWN columns, tags as text."""
    frame = listing.reindex(columns=[c for c in SHOWN if c in listing.columns]).copy()
    frame["tags"] = [tags_text(t) for t in listing["tags"]] if "tags" in listing else ""
    frame.insert(0, "select", False)
    return frame


def edits(before: pd.DataFrame, after: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(id, notes, tags) for rows whose notes or tags changed in the editor."""
    changed = []
    for (_, a), (_, b) in zip(before.iterrows(), after.iterrows()):
        if (a["notes"] or "") != (b["notes"] or "") or (a["tags"] or "") != (b["tags"] or ""):
            changed.append((int(b["id"]), b["notes"] or "", b["tags"] or ""))
    return changed
