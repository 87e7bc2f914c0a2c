"""The shortlist: candidate crystals a user keeps, with notes and tags, in one SQLite file.

The database lives at ``settings.app_data_dir()/shortlist.sqlite`` (env ``CFRL_APP_DATA_DIR``) unless a path
is given. It is safe with several browser sessions, threads and processes at once:

* WAL journal mode (readers never block the writer), a 30 s busy timeout, and one short-lived connection
  per call, so a ``Shortlist`` object can be shared between threads;
* every change is one transaction; ``add`` takes the write lock *before* looking for duplicates
  (``BEGIN IMMEDIATE``), so two sessions adding the same crystal at once store it once.

Each entry keeps the structure as pymatgen JSON and the properties (scores, and later feasibility flags,
uncertainties, ...) as a JSON object, so new properties need no schema change. The schema itself is
versioned with SQLite's ``user_version``: ``MIGRATIONS[k]`` takes a database from version k to k + 1, and
opening a database applies whatever is missing, keeping every stored entry. To add a column, append a
migration (``ALTER TABLE entries ADD COLUMN ... NOT NULL DEFAULT ...``) and, if it should show in ``list()``,
name it in ``_COLUMNS``.

A crystal already on the list (same token string from the same source, or the same structure by pymatgen's
StructureMatcher) is not added twice: ``add`` raises ``DuplicateEntryError`` naming the existing entry.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from core import settings
from core.errors import InvalidInputError

log = logging.getLogger(__name__)

DB_NAME = "shortlist.sqlite"
#: Symmetry tolerance (Å) for the space group recorded with each entry.
SYMPREC = 0.1
BUSY_TIMEOUT_S = 30.0

#: MIGRATIONS[k] takes the schema from version k to k + 1 (statements run in one transaction).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE entries (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            added_at          TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            formula           TEXT NOT NULL,
            spacegroup        INTEGER,
            spacegroup_symbol TEXT,
            nsites            INTEGER NOT NULL,
            source            TEXT NOT NULL DEFAULT '',
            token_string      TEXT,
            notes             TEXT NOT NULL DEFAULT '',
            tags              TEXT NOT NULL DEFAULT '[]',
            properties        TEXT NOT NULL DEFAULT '{}',
            structure         TEXT NOT NULL
        )""",
        "CREATE INDEX entries_formula ON entries (formula)",
        "CREATE INDEX entries_token ON entries (token_string, source)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: Columns of ``list()`` before the flattened properties (everything but the structure JSON).
_COLUMNS = ("id", "formula", "spacegroup", "spacegroup_symbol", "nsites", "source", "token_string",
            "notes", "tags", "added_at", "updated_at")


class DuplicateEntryError(InvalidInputError):
    """The crystal is already on the shortlist; ``existing_id`` is its entry."""

    def __init__(self, message: str, existing_id: int):
        super().__init__(message)
        self.existing_id = existing_id


@dataclass(frozen=True)
class ShortlistEntry:
    """One stored candidate. ``properties`` holds whatever was scored (units in the key names)."""

    id: int
    structure: Structure
    formula: str                      # reduced formula, e.g. "NaCl"
    spacegroup: int | None            # international number found with symprec 0.1 Å
    spacegroup_symbol: str | None
    nsites: int
    source: str                       # e.g. checkpoint name, "upload:foo.cif"
    token_string: str | None
    notes: str
    tags: tuple[str, ...]
    properties: dict[str, Any] = field(default_factory=dict)
    added_at: str = ""                # ISO 8601, UTC
    updated_at: str = ""

    @property
    def name(self) -> str:
        """File-name friendly label, e.g. ``0007_NaCl_sg225``."""
        sg = f"_sg{self.spacegroup}" if self.spacegroup else ""
        return f"{self.id:04d}_{self.formula}{sg}"


# ------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_default(obj: Any) -> Any:
    """JSON for the values a scoring row holds: numpy scalars/arrays, pandas missing values, MSONables."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if isinstance(obj, (datetime, pd.Timestamp)):
        return obj.isoformat()
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default)


def normalize_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
    """Tags as a tuple of distinct, stripped, non-empty strings; a string is split at commas."""
    if tags is None:
        return ()
    items = tags.split(",") if isinstance(tags, str) else tags
    out: list[str] = []
    for tag in items:
        tag = str(tag).strip()
        if tag and tag not in out:
            out.append(tag)
    return tuple(out)


def _spacegroup(structure: Structure) -> tuple[int | None, str | None]:
    try:
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        return sga.get_space_group_number(), sga.get_space_group_symbol()
    except Exception:  # spglib may fail on odd cells; the entry is kept without a space group
        return None, None


def _check_structure(structure: Any) -> Structure:
    if not isinstance(structure, Structure):
        raise InvalidInputError(f"only a pymatgen Structure can be shortlisted, got {type(structure).__name__}")
    if len(structure) == 0:
        raise InvalidInputError("cannot shortlist a structure with no sites")
    if not np.isfinite(structure.lattice.matrix).all() or not structure.volume > 0:
        raise InvalidInputError("cannot shortlist a structure whose lattice is not finite with a positive volume")
    return structure


# ------------------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------------------
class Shortlist:
    """A shortlist stored in one SQLite file (created, or migrated to the current schema, on first use)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else settings.app_data_dir() / DB_NAME
        if str(path) == ":memory:":
            raise InvalidInputError("the shortlist needs a file (each call opens its own connection)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._matcher = StructureMatcher()
        self._migrate()

    def __repr__(self) -> str:
        return f"Shortlist({str(self.path)!r})"

    # -- connections ----------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` (the write lock is taken at once); commits on success."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _migrate(self) -> None:
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("shortlist %s: journal mode %s (WAL unavailable on this filesystem?)", self.path, mode)
        with self._write() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                log.warning("shortlist %s has schema %d, newer than this code's %d; using the known columns",
                            self.path, version, SCHEMA_VERSION)
            for target in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[target]:
                    con.execute(statement)
            if version < SCHEMA_VERSION:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._connect() as con:
            return con.execute("PRAGMA user_version").fetchone()[0]

    # -- duplicates -----------------------------------------------------------------------------------
    def _duplicate(self, con: sqlite3.Connection, structure: Structure, formula: str,
                   token_string: str | None, source: str) -> tuple[int, str] | None:
        if token_string:
            row = con.execute("SELECT id FROM entries WHERE token_string = ? AND source = ? LIMIT 1",
                              (token_string, source)).fetchone()
            if row is not None:
                return row["id"], f"same token string from {source or 'the same source'}"
        for row in con.execute("SELECT id, structure FROM entries WHERE formula = ? ORDER BY id", (formula,)):
            if self._matcher.fit(structure, Structure.from_dict(json.loads(row["structure"]))):
                return row["id"], "same structure by pymatgen's StructureMatcher"
        return None

    def find_duplicate(self, structure: Structure, token_string: str | None = None,
                       source: str = "") -> int | None:
        """Id of an entry holding this crystal already, or None."""
        structure = _check_structure(structure)
        with self._connect() as con:
            hit = self._duplicate(con, structure, structure.composition.reduced_formula, token_string, source)
        return None if hit is None else hit[0]

    # -- changes --------------------------------------------------------------------------------------
    def add(self, structure: Structure, *, properties: dict | None = None, source: str = "",
            token_string: str | None = None, notes: str = "", tags: str | Iterable[str] = (),
            allow_duplicate: bool = False) -> int:
        """Store a crystal; returns its id.

        Raises:
            DuplicateEntryError: the same crystal is already on the list (unless ``allow_duplicate``);
                ``.existing_id`` names it.
            InvalidInputError: not a usable structure, or properties that are not a dict.
        """
        structure = _check_structure(structure)
        if properties is not None and not isinstance(properties, dict):
            raise InvalidInputError(f"properties must be a dict, got {type(properties).__name__}")
        formula = structure.composition.reduced_formula
        sg_number, sg_symbol = _spacegroup(structure)
        now = _now()
        row = {
            "added_at": now, "updated_at": now, "formula": formula, "spacegroup": sg_number,
            "spacegroup_symbol": sg_symbol, "nsites": len(structure), "source": source or "",
            "token_string": token_string or None, "notes": notes or "", "tags": _dumps(list(normalize_tags(tags))),
            "properties": _dumps(properties or {}), "structure": _dumps(structure.as_dict()),
        }
        with self._write() as con:
            if not allow_duplicate:
                hit = self._duplicate(con, structure, formula, row["token_string"], row["source"])
                if hit is not None:
                    existing, reason = hit
                    raise DuplicateEntryError(f"{formula} is already on the shortlist as #{existing}: {reason}",
                                              existing)
            cur = con.execute(f"INSERT INTO entries ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
            return int(cur.lastrowid)

    def update(self, entry_id: int, *, notes: str | None = None, tags: str | Iterable[str] | None = None,
               properties: dict | None = None) -> None:
        """Change notes and/or tags (replaced), and/or merge ``properties`` into the stored ones."""
        with self._write() as con:
            row = con.execute("SELECT properties FROM entries WHERE id = ?", (int(entry_id),)).fetchone()
            if row is None:
                raise InvalidInputError(f"no shortlist entry #{entry_id} (removed in another session?)")
            changes: dict[str, Any] = {"updated_at": _now()}
            if notes is not None:
                changes["notes"] = notes
            if tags is not None:
                changes["tags"] = _dumps(list(normalize_tags(tags)))
            if properties is not None:
                changes["properties"] = _dumps({**json.loads(row["properties"]), **properties})
            assignments = ", ".join(f"{k} = ?" for k in changes)
            con.execute(f"UPDATE entries SET {assignments} WHERE id = ?", (*changes.values(), int(entry_id)))

    def remove(self, entry_id: int) -> bool:
        """Delete an entry; False if it was not there (e.g. already removed by another session)."""
        with self._write() as con:
            return con.execute("DELETE FROM entries WHERE id = ?", (int(entry_id),)).rowcount > 0

    # -- reading --------------------------------------------------------------------------------------
    @staticmethod
    def _entry(row: sqlite3.Row) -> ShortlistEntry:
        return ShortlistEntry(
            id=row["id"], structure=Structure.from_dict(json.loads(row["structure"])), formula=row["formula"],
            spacegroup=row["spacegroup"], spacegroup_symbol=row["spacegroup_symbol"], nsites=row["nsites"],
            source=row["source"], token_string=row["token_string"], notes=row["notes"],
            tags=tuple(json.loads(row["tags"])), properties=json.loads(row["properties"]),
            added_at=row["added_at"], updated_at=row["updated_at"])

    def get(self, entry_id: int) -> ShortlistEntry:
        with self._connect() as con:
            row = con.execute("SELECT * FROM entries WHERE id = ?", (int(entry_id),)).fetchone()
        if row is None:
            raise InvalidInputError(f"no shortlist entry #{entry_id} (removed in another session?)")
        return self._entry(row)

    def entries(self, ids: Sequence[int] | None = None) -> list[ShortlistEntry]:
        """All entries (by id), or those with the given ids in that order (missing ids are skipped)."""
        with self._connect() as con:
            rows = {r["id"]: r for r in con.execute("SELECT * FROM entries ORDER BY id")}
        wanted = rows if ids is None else [int(i) for i in ids if int(i) in rows]
        return [self._entry(rows[i]) for i in wanted]

    def __len__(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def list(self) -> pd.DataFrame:
        """One row per entry (by id): the columns of ``_COLUMNS`` (tags as lists), then every property as
        its own column (nested dicts flattened with "."; a property named like a base column gets the
        prefix ``property.``)."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(_COLUMNS)}, properties FROM entries ORDER BY id").fetchall()
        base = pd.DataFrame([{c: r[c] for c in _COLUMNS} for r in rows], columns=list(_COLUMNS))
        base["tags"] = [json.loads(t) for t in base["tags"]] if len(base) else base["tags"]
        base["spacegroup"] = base["spacegroup"].astype("Int64")   # None when spglib found none
        props = [{(f"property.{k}" if k in _COLUMNS else k): v for k, v in json.loads(r["properties"]).items()}
                 for r in rows]
        if not any(props):
            return base
        flat = pd.json_normalize(props, sep=".")
        return pd.concat([base, flat.set_index(base.index)], axis=1)
