"""Unsaved notes/tags edits and row selections on the Shortlist page, kept by entry id.

``st.data_editor`` remembers edits by row position, and forgets them whenever its table changes, which
happens each time another session adds or removes an entry. So every edit is copied, as it is made (the
editor's ``on_change``), into ``Edits`` in the session state, keyed by entry id together with the notes
and tags the edit started from (its *base*). The table shown is the stored list with the pending edits laid
over it, so they stay on screen whatever the list does.

Each edit is saved as soon as the editor reports it (``commit``, called from the same ``on_change``), not on a
later button click: the grid sends a rerun of its own right after a cell is committed, and a button press
that arrives with it can be dropped by Streamlit (bench/shortlist_load.py measured 1 of 2-3 saves lost that
way), while a changed value is never dropped. Saving is a compare-and-set
(``Shortlist.update(..., expected=base)``): an edit is saved, or kept and reported as a conflict with what the
other session wrote, or reported with its text when its entry was removed; it is never silently dropped.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.errors import InvalidInputError
from core.shortlist import EditConflictError, normalize_tags

FIELDS = ("notes", "tags")


def _tags_text(tags: Any) -> str:
    return ", ".join(tags) if isinstance(tags, (list, tuple)) else (tags or "")


def _stored(listing: pd.DataFrame) -> dict[int, dict[str, str]]:
    """{id: {"notes": text, "tags": "a, b"}} of the stored list."""
    return {int(i): {"notes": n or "", "tags": _tags_text(t)}
            for i, n, t in zip(listing["id"], listing["notes"], listing["tags"])}


def _same(a: dict[str, str], b: dict[str, str]) -> bool:
    return a["notes"] == b["notes"] and normalize_tags(a["tags"]) == normalize_tags(b["tags"])


@dataclass
class Edits:
    """One session's pending edits and selection (lives in ``st.session_state``)."""

    pending: dict[int, dict[str, Any]] = field(default_factory=dict)   # id -> notes, tags, base
    selected: set[int] = field(default_factory=set)
    shown: list[int] = field(default_factory=list)                     # ids of the rows now on screen
    stored: dict[int, dict[str, str]] = field(default_factory=dict)    # their stored notes/tags
    generation: int = 0                                                # bumped when the editor must start afresh
    notices: list[str] = field(default_factory=list)                   # problems of the last save, shown until the next
    saved_ids: list[int] = field(default_factory=list)                 # entries the last save wrote

    # -- building the table -----------------------------------------------------------------------
    def table(self, frame: pd.DataFrame, listing: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (the editor's columns, one row per stored entry) with pending edits and the selection
        laid over it; remembers which ids are shown and what is stored for them."""
        self.stored = _stored(listing)
        self.shown = [int(i) for i in frame["id"]]
        self.selected &= set(self.shown)
        out = frame.copy()
        # whole columns at once: one cell assignment per row costs ~2 ms, a second for 500 entries
        out["select"] = [entry_id in self.selected for entry_id in self.shown]
        for name in FIELDS:
            stored = out[name].tolist()
            out[name] = [self.pending[i][name] if i in self.pending else stored[row]
                         for row, i in enumerate(self.shown)]
        return out

    def editor_key(self, prefix: str = "shortlist-editor") -> str:
        """A key that changes when the stored list changes (this session's own saves included) or edits were
        dropped, so the editor starts from the table shown and never replays an edit it remembers by position
        onto another entry. Keeping the editor across an own save (same key, values changed) was tried: the
        browser then sometimes dropped the next edit of that editor without sending it (bench/shortlist_load.py)."""
        digest = hashlib.blake2b(repr((self.shown, sorted(self.stored.items()))).encode(), digest_size=6).hexdigest()
        return f"{prefix}-{digest}-{self.generation}"

    # -- taking edits from the editor ---------------------------------------------------------------
    def capture(self, edited_rows: dict[Any, dict[str, Any]]) -> None:
        """Copy the editor's ``edited_rows`` ({row position: {column: value}}) into id-keyed edits."""
        for position, change in (edited_rows or {}).items():
            position = int(position)
            if not 0 <= position < len(self.shown):
                continue
            entry_id = self.shown[position]
            if "select" in change:
                (self.selected.add if change["select"] else self.selected.discard)(entry_id)
            if not set(change) & set(FIELDS):
                continue
            base = self.stored.get(entry_id, {"notes": "", "tags": ""})
            edit = self.pending.setdefault(entry_id, {**base, "base": dict(base)})
            for name in FIELDS:
                if name in change:
                    edit[name] = change[name] or ""
            if _same(edit, edit["base"]):
                del self.pending[entry_id]            # edited back to what it was

    # -- what to tell the user ------------------------------------------------------------------------
    def count(self) -> int:
        return len(self.pending)

    def conflicts(self) -> dict[int, dict[str, str]]:
        """{id: stored values} for pending edits whose entry changed (or went) since the edit began."""
        return {i: self.stored.get(i) for i, e in self.pending.items()
                if i not in self.stored or not _same(self.stored[i], e["base"])}

    def keep_mine(self, entry_id: int) -> None:
        """Resolve a conflict by overwriting: the edit now starts from what is stored."""
        if entry_id in self.pending and entry_id in self.stored:
            self.pending[entry_id]["base"] = dict(self.stored[entry_id])

    def discard(self, entry_id: int) -> None:
        self.pending.pop(entry_id, None)
        self.generation += 1

    # -- saving ---------------------------------------------------------------------------------------
    def commit(self, edited_rows: dict[Any, dict[str, Any]], store) -> None:
        """The editor's ``on_change``: take its edits (``capture``) and save them at once (``save``); what was
        saved and any problem wait in ``saved_ids`` / ``notices`` for the page to show (notices until the
        next edit)."""
        self.notices, self.saved_ids = [], []
        self.capture(edited_rows)
        if self.pending:
            self.notices = self.save(store)[1]     # ``save`` keeps every edit it could not write, and says why

    def save(self, store) -> tuple[int, list[str]]:
        """Write every pending edit whose base still holds; returns (saved, problems). Conflicting edits stay
        pending, not in ``problems`` (``conflicts`` names them with both versions after the next ``table``);
        an edit of a removed entry is reported with its text; an edit the store could not write (e.g. database
        busy) stays pending, reported."""
        saved, problems = 0, []
        self.saved_ids = []
        for entry_id, edit in sorted(self.pending.items()):
            if entry_id not in self.stored:
                problems.append(f"#{entry_id} was removed in another session; your notes were "
                                f"{edit['notes']!r}, tags {edit['tags']!r}")
                del self.pending[entry_id]
                continue
            try:
                store.update(entry_id, notes=edit["notes"], tags=edit["tags"], expected=edit["base"])
            except EditConflictError as exc:
                # stays pending (``conflicts``, the page, shows both versions once it has reread the list),
                # unless it is already stored as typed (e.g. the editor replayed an edit)
                if _same({"notes": exc.current["notes"] or "", "tags": _tags_text(exc.current["tags"])}, edit):
                    del self.pending[entry_id]
                continue
            except InvalidInputError as exc:  # removed meanwhile, or text the store refuses: say so, keep the text
                problems.append(f"#{entry_id}: {exc}; your notes were {edit['notes']!r}, tags {edit['tags']!r}")
                del self.pending[entry_id]
                self.generation += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the database could not be written now: keep the edit
                problems.append(f"#{entry_id} not saved ({exc}); your edit is kept here, press Save again to retry")
                continue
            del self.pending[entry_id]
            self.saved_ids.append(entry_id)
            saved += 1
        return saved, problems

    def unsaved(self) -> list[int]:
        """Pending edits without a conflict (the last save could not write them): the page offers Save again."""
        conflicting = self.conflicts()
        return [i for i in self.pending if i not in conflicting]
