"""Shortlist from the app: adding a structure from Explore, editing notes/tags, exporting.

Storage is ``core.shortlist.Shortlist`` (SQLite under the app data directory, safe with several
sessions); this module turns a pool entry's score row into the stored properties and lays out the
widgets.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Mapping

import numpy as np
import pandas as pd
import streamlit as st

from app.widgets import show_error

STORED_PROPERTIES = ("energy_per_atom", "e_form_per_atom", "e_above_hull", "hull_reference", "band_gap_ev",
                     "eps_elec", "fom_ev", "struct_valid", "comp_valid", "unique", "novel", "relaxed", "logp",
                     # relaxation and symmetry, for the feasibility checks
                     "relax_steps", "relax_converged", "match_relaxed", "rmsd_relaxed", "spacegroup", "spacegroup_found",
                     # ± columns of core.scoring.uncertainty, when the row has them
                     "e_above_hull_mean", "e_above_hull_std", "e_above_hull_n", "eps_elec_mean", "eps_elec_std",
                     "eps_elec_n", "band_gap_ev_std", "fom_ev_mean", "fom_ev_std", "fom_ev_lcb")
SHOWN = ("id", "formula", "spacegroup", "spacegroup_symbol", "nsites", "e_above_hull", "e_above_hull_std",
         "band_gap_ev", "eps_elec", "eps_elec_std", "fom_ev", "fom_ev_std", "feasibility_failed", "source", "notes",
         "tags", "added_at")


def store():
    from core.shortlist import Shortlist

    return Shortlist()


def _plain(values: Mapping[str, Any], keys) -> dict[str, Any]:
    out = {}
    for key in keys:
        value = values.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def properties_of(row: Mapping[str, Any], structure=None) -> dict[str, Any]:
    """The score values worth keeping (plain Python, no NaN), units in the key names; with the structure,
    also its feasibility checklist (``feasible_*``, ``feasibility_failed``, ``feasibility_notes``)."""
    out = _plain(row, STORED_PROPERTIES)
    if structure is not None:
        try:
            out.update(feasibility_of(structure, out))
        except Exception:  # noqa: BLE001 - the checklist is extra; keeping the candidate is what matters
            pass
    return out


def feasibility_of(structure, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The checklist columns of ``core.scoring.feasibility`` for a structure and its stored properties."""
    from core.scoring.feasibility import as_columns, feasibility

    return as_columns(feasibility(structure, properties))


def assess_entries(store, ids, committee: bool = False, on_member=None) -> int:
    """Add uncertainty (dielectric ensemble ε ± σ, FoM ± σ; with ``committee`` the MLIP committee's
    E_hull ± σ, slow: it loads CHGNet and SevenNet) and the feasibility checklist to shortlist entries,
    stored in their properties (``core.scoring.assess.judge``, as ``python -m core trust`` does).
    Returns the number of entries updated."""
    from core.scoring.assess import judge
    from core.scoring.uncertainty import COMMITTEE

    entries = store.entries(ids)
    if not entries:
        return 0
    # object dtype: stored integers (relax_steps) stay integers for the checklist's messages
    frame = pd.DataFrame([e.properties for e in entries], dtype=object)
    frame = judge(frame, [e.structure for e in entries], committee=COMMITTEE if committee else None,
                  on_member=on_member)
    members = [c for c in frame.columns if c.startswith("e_above_hull_") and c not in STORED_PROPERTIES]
    checklist = [c for c in frame.columns if c.startswith(("feasible_", "feasibility_"))]
    for entry, record in zip(entries, frame.to_dict("records")):
        props = _plain(record, (*STORED_PROPERTIES[STORED_PROPERTIES.index("e_above_hull_mean"):], *members))
        props.update({c: _none_if_missing(record.get(c)) for c in checklist})
        store.update(entry.id, properties=props)
    return len(entries)


def _none_if_missing(value: Any) -> Any:
    """A checklist value as stored: None for "not judged", plain Python otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def dft_inputs_zip(store, ids) -> bytes:
    """MP VASP input sets (relax, static, dielectric) of the given entries as zip bytes (``core.dft_export``)."""
    from core.dft_export import dft_zip

    return dft_zip(store.entries(ids))


#: CIF text per stored entry, shared by every session of the server: an entry's structure never changes
#: after it is added and ids are never reused, so (database, id, added_at) names one CIF for good.
_CIFS: dict[tuple[str, int, str], str] = {}
_CIFS_LOCK = threading.Lock()
CIF_CACHE_SIZE = 20_000


def entry_cif(path, entry) -> str:
    """The symmetrised CIF of a shortlist entry (``core.export.cif``, ~75 ms), written once per server."""
    from core.export import cif

    key = (str(path), int(entry.id), str(entry.added_at))
    text = _CIFS.get(key)
    if text is None:
        text = cif(entry.structure)
        with _CIFS_LOCK:
            if len(_CIFS) >= CIF_CACHE_SIZE:
                _CIFS.pop(next(iter(_CIFS)))   # oldest first
            _CIFS[key] = text
    return text


def cif_zip_of(store, ids) -> bytes:
    """The CIF zip of the given entries (``core.export.cif_zip``) with each CIF from ``entry_cif``: 500
    entries take ~37 s the first time, well under a second after."""
    from core.export import cif_zip

    return cif_zip(store.entries(ids), render=lambda entry, _structure: entry_cif(store.path, entry))


def entry_labels(listing: pd.DataFrame) -> dict[int, str]:
    """{id: "#7 NaCl (base)"} for the entry picker (built from whole columns, not row by row)."""
    return {int(i): f"#{int(i)} {f} ({s})" for i, f, s in zip(listing["id"], listing["formula"], listing["source"])}


def tags_text(tags) -> str:
    return ", ".join(tags) if isinstance(tags, (list, tuple)) else (tags or "")


def add_form(entry, row: Mapping[str, Any], key: str) -> None:
    """Notes, tags and an 'Add to shortlist' button for one pool entry."""
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
        new_id = store().add(entry.structure, properties=properties_of(row, entry.structure), source=entry.source,
                             token_string=entry.token_string, notes=notes, tags=tags)
    except DuplicateEntryError as exc:
        st.info(f"Already kept: {exc}", icon=":material/bookmark:")
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "cannot add to the shortlist")
    else:
        st.success(f"Added {entry.formula} to the shortlist as #{new_id}.", icon=":material/bookmark:")


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
