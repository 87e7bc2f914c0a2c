"""The structures a session works on: generated samples, uploaded files, large-screen rows, and their scores.

A ``Pool`` holds one entry per structure under a session-wide integer id (ids are never reused,
so a score, a plot click or a shortlist action always refers to the same structure) and the score
row of each entry as ``core.scoring.pipeline.score_iter`` produced it. Plain Python, no Streamlit:
the pages keep one Pool in ``st.session_state``; a scoring thread writes rows into it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

GENERATED = "generated"
UPLOADED = "uploaded"
SCREEN = "screen"                # rows of a large screen (``python -m core screen``), already scored

# columns of the candidate table, in display order (units in the names, see app.tables)
ENTRY_COLUMNS = ("id", "kind", "source", "formula", "spacegroup", "nsites", "logp", "token_string", "build_error")


@dataclass
class Entry:
    """One candidate structure. ``structure`` is None when a sample could not be built (``error`` says why)."""

    id: int
    kind: str                    # GENERATED | UPLOADED | SCREEN
    source: str                  # checkpoint name, "file.cif" for uploads, "screen <folder>" for screen rows
    structure: Any = None        # pymatgen Structure
    token_string: str | None = None
    logp: float | None = None    # log-likelihood under the generating model, nats
    spacegroup: int | None = None  # the space group it was generated in (uploads: None until scored)
    formula: str | None = None
    error: str | None = None

    @property
    def nsites(self) -> int | None:
        return len(self.structure) if self.structure is not None else None


@dataclass
class Pool:
    """Candidates by id, their score rows, and the generation settings that made the generated ones."""

    entries: dict[int, Entry] = field(default_factory=dict)
    scores: dict[int, dict] = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    screens: dict = field(default_factory=dict)   # resolved folder -> what was opened (see app.uploads.open_screen)
    _next_id: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- adding --------------------------------------------------------------------------------
    def _add(self, entry_kw: dict) -> int:
        with self._lock:
            i = self._next_id
            self._next_id += 1
            self.entries[i] = Entry(id=i, **entry_kw)
        return i

    def add_samples(self, samples: Sequence[Any], source: str) -> list[int]:
        """Add ``core.sampler.Sample`` objects; returns their ids."""
        return [self._add(dict(kind=GENERATED, source=source, structure=s.structure, token_string=s.string,
                               logp=float(s.logp), spacegroup=int(s.spacegroup), formula=s.formula, error=s.error))
                for s in samples]

    def add_structures(self, structures: Iterable[Any], source: str) -> list[int]:
        """Add uploaded pymatgen Structures (``source`` = file name); returns their ids."""
        return [self._add(dict(kind=UPLOADED, source=source, structure=s, formula=s.composition.reduced_formula))
                for s in structures]

    def add_scored(self, entries: Iterable[tuple[dict, dict | None]], kind: str, source: str) -> list[int]:
        """Add structures that arrive with their score rows (e.g. a screen's finished rows).

        Each item is (entry fields, score row or None): entry fields as ``Entry`` takes them
        (``structure``, ``token_string``, ``logp``, ``spacegroup``, ``formula``, ``error``), the score
        row as ``core.scoring.pipeline.score_iter`` yields it. Returns the new ids in input order.
        """
        ids = []
        for fields, row in entries:
            i = self._add(dict(kind=kind, source=source, **fields))
            if row is not None:
                self.record_score(i, row)
            ids.append(i)
        return ids

    def clear(self, kind: str | None = None, source: str | None = None) -> None:
        """Forget the entries of one kind (all when None), optionally only those from ``source``, and their scores."""
        with self._lock:
            for i in [i for i, e in self.entries.items()
                      if (kind is None or e.kind == kind) and (source is None or e.source == source)]:
                self.entries.pop(i)
                self.scores.pop(i, None)

    # ---- scores --------------------------------------------------------------------------------
    def record_score(self, entry_id: int, row: dict) -> None:
        """Store a score row (thread-safe: the scoring thread calls this)."""
        with self._lock:
            if entry_id in self.entries:
                self.scores[entry_id] = dict(row)

    def unscored_ids(self) -> list[int]:
        """Ids of buildable entries without a score row, in id order."""
        return [i for i, e in sorted(self.entries.items()) if e.structure is not None and i not in self.scores]

    def ids(self, kind: str | None = None) -> list[int]:
        return [i for i, e in sorted(self.entries.items()) if kind is None or e.kind == kind]

    # ---- tables --------------------------------------------------------------------------------
    def entries_frame(self) -> pd.DataFrame:
        """One row per entry (id order): id, kind, source, formula, spacegroup, nsites, logp, token_string, build_error."""
        with self._lock:
            rows = [dict(id=e.id, kind=e.kind, source=e.source, formula=e.formula, spacegroup=e.spacegroup,
                         nsites=e.nsites, logp=e.logp, token_string=e.token_string, build_error=e.error)
                    for _, e in sorted(self.entries.items())]
        return pd.DataFrame(rows, columns=list(ENTRY_COLUMNS))

    def scored_frame(self, only_scored: bool = False) -> pd.DataFrame:
        """Entries joined with their score rows (score columns NaN/None where not scored yet), indexed by id.

        The score row's ``formula`` / ``spacegroup`` (from the structure, spglib 0.1 Å) replace the
        entry's when present; ``scored`` tells whether a row exists.
        """
        entries = self.entries_frame().set_index("id", drop=False)
        with self._lock:
            scores = {i: dict(r) for i, r in self.scores.items() if i in self.entries}
        entries["scored"] = entries.index.isin(list(scores))
        if scores:
            s = pd.DataFrame.from_dict(scores, orient="index")
            s = s.rename(columns={"spacegroup": "spacegroup_found"})
            s = s.drop(columns=[c for c in s.columns if c in entries.columns])  # formula, nsites: same values
            entries = entries.join(s, how="left")
        entries["status"] = [status(r) for _, r in entries.iterrows()]
        if only_scored:
            entries = entries[entries["scored"]]
        return entries

    def structure(self, entry_id: int):
        e = self.entries.get(entry_id)
        return e.structure if e is not None else None


def status(row: pd.Series) -> str:
    """One word (and why) for a row: 'not buildable: …', 'queued', 'error: …' or 'scored'."""
    if isinstance(row.get("build_error"), str):
        return f"not buildable: {row['build_error']}"
    if not row.get("scored"):
        return "queued"
    error = row.get("error")
    return f"error: {error}" if isinstance(error, str) and error else "scored"


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """Number of entries, buildable ones, scored ones and scoring errors in a ``scored_frame``."""
    n = len(frame)
    buildable = int(frame["build_error"].isna().sum()) if n else 0
    scored = int(frame["scored"].sum()) if n else 0
    errors = int(frame["error"].notna().sum()) if n and "error" in frame else 0
    return {"total": n, "buildable": buildable, "scored": scored, "errors": errors}


def numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float array (None -> NaN); all-NaN when the column is absent."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
