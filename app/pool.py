"""The structures a session works on: generated samples, uploaded files, large-screen rows, and their scores.

A ``Pool`` holds one entry per structure under a session-wide integer id (ids are never reused,
so a score, a plot click or a shortlist action always refers to the same structure) and the score
row of each entry as ``core.scoring.pipeline.score_iter`` produced it. Plain Python, no Streamlit:
the pages keep one Pool in ``st.session_state``; a scoring thread writes rows into it.
"""
from __future__ import annotations

import functools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

GENERATED = "generated"
UPLOADED = "uploaded"
SCREEN = "screen"                # rows of a large screen (``python -m core screen``), already scored

# columns of the candidate table, in display order (units in the names, see app.tables)
ENTRY_COLUMNS = ("id", "run", "kind", "source", "formula", "spacegroup", "nsites", "logp", "token_string", "build_error",
                 "elements")
_ELEMENT = re.compile(r"([A-Z][a-z]?)")


def formula_elements(formula: str | None) -> tuple[str, ...]:
    """Element symbols of a formula string, sorted ('Cs2LiLuF6' -> ('Cs', 'F', 'Li', 'Lu'))."""
    return tuple(sorted(set(_ELEMENT.findall(formula or ""))))


@dataclass(frozen=True)
class Run:
    """One named batch of structures: a Generate click, an uploaded file or an opened screen.

    ``name`` is unique in the session and is what the ``run`` column and the run filters show;
    ``settings`` says how it was made (model, space group, count, temperature, seed; or the file).
    """

    name: str
    kind: str                    # GENERATED | UPLOADED | SCREEN
    model: str | None = None     # checkpoint that generated it (None for uploads)
    settings: str = ""
    created: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))

    def describe(self) -> str:
        made = f"{self.model}, " if self.model else ""
        return f"{made}{self.settings} · {self.created}".strip(" ·,")


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
    run: str = ""                # name of the Run it belongs to (``Pool.runs``)

    @property
    def nsites(self) -> int | None:
        return len(self.structure) if self.structure is not None else None

    @functools.cached_property
    def elements(self) -> tuple[str, ...]:
        """Element symbols present (from the structure, else the formula), sorted."""
        if self.structure is not None:
            return tuple(sorted({el.symbol for el in self.structure.composition.elements}))
        return formula_elements(self.formula)


@dataclass
class Pool:
    """Candidates by id, their score rows, and the generation settings that made the generated ones."""

    entries: dict[int, Entry] = field(default_factory=dict)
    scores: dict[int, dict] = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    screens: dict = field(default_factory=dict)   # resolved folder -> what was opened (see app.uploads.open_screen)
    runs: dict[str, Run] = field(default_factory=dict)   # run name -> Run, in the order they were made
    _next_id: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- runs ----------------------------------------------------------------------------------
    def new_run(self, kind: str, model: str | None = None, settings: str = "", name: str | None = None) -> Run:
        """Register a run; its name is ``name`` when free, else '<n>. <model or kind> · HH:MM:SS' (unique)."""
        with self._lock:
            if name is None or name in self.runs:
                stem = name or f"{model or kind}"
                n = len(self.runs) + 1
                while f"{n}. {stem}" in self.runs:
                    n += 1
                name = f"{n}. {stem}"
            run = Run(name, kind, model, settings)
            self.runs[name] = run
        return run

    def ensure_run(self, name: str, kind: str, model: str | None = None, settings: str = "") -> Run:
        """The run called ``name``, registered when new (uploads and screens are named by their file/folder)."""
        with self._lock:
            if name not in self.runs:
                self.runs[name] = Run(name, kind, model, settings)
            return self.runs[name]

    def remove_run(self, name: str) -> int:
        """Forget a run, its entries and their scores (only when the user asks); returns entries removed."""
        with self._lock:
            gone = [i for i, e in self.entries.items() if e.run == name]
            for i in gone:
                self.entries.pop(i)
                self.scores.pop(i, None)
            self.runs.pop(name, None)
        return len(gone)

    def run_names(self) -> list[str]:
        """Runs that still hold entries, oldest first."""
        with self._lock:
            used = {e.run for e in self.entries.values()}
            return [name for name in self.runs if name in used]

    # ---- adding --------------------------------------------------------------------------------
    def _add(self, entry_kw: dict) -> int:
        entry_kw.setdefault("run", entry_kw.get("source", ""))
        with self._lock:
            i = self._next_id
            self._next_id += 1
            self.entries[i] = Entry(id=i, **entry_kw)
        return i

    def add_samples(self, samples: Sequence[Any], source: str, run: str | None = None) -> list[int]:
        """Add ``core.sampler.Sample`` objects (to run ``run``, default: named after ``source``); returns their ids."""
        if run is None:
            run = self.ensure_run(source, GENERATED, model=source).name
        return [self._add(dict(kind=GENERATED, source=source, run=run, structure=s.structure, token_string=s.string,
                               logp=float(s.logp), spacegroup=int(s.spacegroup), formula=s.formula, error=s.error))
                for s in samples]

    def add_structures(self, structures: Iterable[Any], source: str, run: str | None = None) -> list[int]:
        """Add uploaded pymatgen Structures (``source`` = file name, also the run's name by default); returns ids."""
        run = run or self.ensure_run(source, UPLOADED, settings=f"uploaded {source}").name
        return [self._add(dict(kind=UPLOADED, source=source, run=run, structure=s, formula=s.composition.reduced_formula))
                for s in structures]

    def add_problem(self, source: str, label: str, problem: str, run: str | None = None) -> int:
        """An uploaded item that could not be read as a structure: a row saying why (never scored)."""
        run = run or self.ensure_run(source, UPLOADED, settings=f"uploaded {source}").name
        return self._add(dict(kind=UPLOADED, source=source, run=run, formula=label, error=problem))

    def add_scored(self, entries: Iterable[tuple[dict, dict | None]], kind: str, source: str) -> list[int]:
        """Add structures that arrive with their score rows (e.g. a screen's finished rows).

        Each item is (entry fields, score row or None): entry fields as ``Entry`` takes them
        (``structure``, ``token_string``, ``logp``, ``spacegroup``, ``formula``, ``error``), the score
        row as ``core.scoring.pipeline.score_iter`` yields it. Returns the new ids in input order.
        """
        ids = []
        self.ensure_run(source, kind, settings=source)
        for fields, row in entries:
            i = self._add(dict(kind=kind, source=source, run=source, **fields))
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
        """One row per entry (id order): id, run, kind, source, formula, spacegroup, nsites, logp, token_string,
        build_error, elements (tuple of symbols)."""
        with self._lock:
            rows = [dict(id=e.id, run=e.run, kind=e.kind, source=e.source, formula=e.formula, spacegroup=e.spacegroup,
                         nsites=e.nsites, logp=e.logp, token_string=e.token_string, build_error=e.error,
                         elements=e.elements)
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
        what = "not usable" if row.get("kind") == UPLOADED else "not buildable"
        return f"{what}: {row['build_error']}"
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
