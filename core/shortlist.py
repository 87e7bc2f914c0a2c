"""The shortlist: candidate crystals a user keeps, with notes and tags, in one SQLite file.

The database lives at ``settings.app_data_dir()/shortlist.sqlite`` (env ``CFRL_APP_DATA_DIR``) unless a path
is given. It is safe with several browser sessions, threads and processes at once:

* WAL journal mode (readers never block the writer), a 30 s busy timeout, and one short-lived connection
  per call, so a ``Shortlist`` object can be shared between threads;
* opening reads the schema version without the write lock (it is taken only when a migration is due);
  ``Shortlist(path, read_only=True)`` opens the file read-only and refuses every change;
* every change is one transaction. ``add`` looks for duplicates before taking the write lock, then, under
  the lock (``BEGIN IMMEDIATE``), looks only at the entries added meanwhile, so two sessions adding the same
  crystal at once store it once and the lock is held for milliseconds however long the list is;
* ``update(..., expected={...})`` changes notes/tags only if they still hold what the editor started from,
  raising ``EditConflictError`` otherwise: an edit is saved or reported, never silently lost.

Each entry keeps the structure as pymatgen JSON and the properties (scores, and later feasibility flags,
uncertainties, ...) as a JSON object, so new properties need no schema change. The schema itself is
versioned with SQLite's ``user_version``: ``MIGRATIONS[k]`` takes a database from version k to k + 1 (SQL
statements, or a Python step given the connection), and opening a database applies whatever is missing,
keeping every stored entry. To add a column, append a migration (``ALTER TABLE entries ADD COLUMN ... NOT
NULL DEFAULT ...``) and, if it should show in ``list()``, name it in ``_COLUMNS``.

A crystal already on the list (same token string from the same source, or the same structure by pymatgen's
StructureMatcher) is not added twice: ``add`` raises ``DuplicateEntryError`` naming the existing entry.
Only entries with the same ``fingerprint`` (reduced formula, space group at 0.1 Å and the share of the
cell each symmetry orbit of each element holds; an indexed column) are compared with StructureMatcher.

A damaged file (not a database, or a malformed page) raises ``DamagedShortlistError`` naming the file and
how to recover; the file is left as it is and nothing is written into it. ``salvage(path, out)`` (the
command ``python -m core shortlist --salvage OUT``) copies every readable entry into a new file.
"""
from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from core import settings
from core.errors import CrystalFormerError, InvalidInputError, MissingResourceError
from core.structure_check import require_sane
from core.symmetry import analyzer

log = logging.getLogger(__name__)

DB_NAME = "shortlist.sqlite"
#: Symmetry tolerance (Å) for the space group recorded with each entry.
SYMPREC = 0.1
BUSY_TIMEOUT_S = 30.0
#: Largest entry id SQLite can hold (a signed 64-bit integer).
MAX_ID = 2**63 - 1
#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = (11, 26)

Migration = tuple["str | Callable[[sqlite3.Connection], None]", ...]


def _backfill_fingerprints(con: sqlite3.Connection) -> None:
    """Fingerprints of the entries stored before the column existed (schema 1 -> 2)."""
    rows = con.execute("SELECT id, formula, structure FROM entries WHERE fingerprint IS NULL").fetchall()
    for row in rows:
        try:
            key = _symmetry(Structure.from_dict(json.loads(row["structure"])))[2]
        except Exception:  # noqa: BLE001 - an unreadable stored structure is compared by formula alone
            key = f"{row['formula']}|?"
        con.execute("UPDATE entries SET fingerprint = ? WHERE id = ?", (key, row["id"]))


#: MIGRATIONS[k] takes the schema from version k to k + 1 (its steps run in one transaction).
MIGRATIONS: tuple[Migration, ...] = (
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
    (   # the duplicate check looks entries up by this key instead of scanning every same-formula entry
        "ALTER TABLE entries ADD COLUMN fingerprint TEXT",
        "CREATE INDEX entries_fingerprint ON entries (fingerprint)",
        _backfill_fingerprints,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: Columns of ``list()`` before the flattened properties (everything but the structure JSON).
_COLUMNS = ("id", "formula", "spacegroup", "spacegroup_symbol", "nsites", "source", "token_string",
            "notes", "tags", "added_at", "updated_at")
#: What ``update(expected=...)`` can compare.
_EDITABLE = ("notes", "tags")


class DuplicateEntryError(InvalidInputError):
    """The crystal is already on the shortlist; ``existing_id`` is its entry."""

    def __init__(self, message: str, existing_id: int):
        super().__init__(message)
        self.existing_id = existing_id


class EditConflictError(InvalidInputError):
    """Notes or tags changed in another session since the edit began; ``current`` holds what is stored now
    (``{"notes": str, "tags": tuple}``) and nothing was written."""

    def __init__(self, message: str, entry_id: int, current: dict[str, Any]):
        super().__init__(message)
        self.entry_id = entry_id
        self.current = current


class DamagedShortlistError(CrystalFormerError):
    """The shortlist file is damaged. The message names it and says how to recover; nothing is written to it."""

    def __init__(self, path: Path, detail: str):
        self.path = path
        super().__init__(
            f"the shortlist database {path} is damaged ({detail}). It is left untouched and nothing more is "
            f"written to it. To recover: `python -m core shortlist --db {path} --salvage RECOVERED.sqlite` copies "
            f"every readable entry into a new file; then move the damaged file aside (e.g. `mv {path} "
            f"{path}.damaged`) and put the recovered file in its place, or start an empty list.")


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
    """Tags as a tuple of distinct, stripped, non-empty strings; a string is split at commas.

    Raises:
        InvalidInputError: ``tags`` is neither text nor a list of texts (e.g. ``5``, ``{"a": 1}``).
    """
    if tags is None:
        return ()
    if isinstance(tags, str):
        items: Iterable[Any] = tags.split(",")
    elif isinstance(tags, (list, tuple, set, frozenset, pd.Series, np.ndarray)):
        items = tags
    else:
        raise InvalidInputError(f"tags must be text or a list of texts, got {type(tags).__name__}")
    out: list[str] = []
    for tag in items:
        if not isinstance(tag, str):
            raise InvalidInputError(f"each tag must be text, got {type(tag).__name__} ({tag!r:.40})")
        tag = tag.strip()
        if tag and tag not in out:
            out.append(tag)
    return tuple(out)


def _text(value: Any, name: str) -> str:
    """``value`` as stored text ('' for None); InvalidInputError for anything but text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text, got {type(value).__name__}")
    return value


def as_entry_id(value: Any) -> int:
    """An entry id as an int; InvalidInputError for anything that cannot be one ("abc", 2.5, 2**70, True)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"a shortlist entry id is a whole number, got {type(value).__name__} ({value!r:.40})")
    value = int(value)
    if not 1 <= value <= MAX_ID:
        raise InvalidInputError(f"no shortlist entry #{value} (ids run from 1 to {MAX_ID})")
    return value


def _symmetry(structure: Structure) -> tuple[int | None, str | None, str]:
    """(space group number, symbol, duplicate fingerprint) at ``SYMPREC``.

    The fingerprint is what two copies of one crystal share whatever their cell (primitive, conventional,
    supercell, scaled): the reduced formula, the space group, and per element the share of the cell's atoms
    each of its symmetry orbits holds (rock salt: ``NaCl|225|Cl:1/2|Na:1/2``). ``formula|?`` when spglib
    gives up; such entries are compared with each other only.
    """
    formula = structure.composition.reduced_formula
    try:
        sga = analyzer(structure, SYMPREC, "cannot shortlist this structure")
        dataset = sga.get_symmetry_dataset()
        number, symbol = int(dataset.number), sga.get_space_group_symbol()
        orbits = Counter(int(k) for k in dataset.equivalent_atoms)
    except InvalidInputError:
        raise
    except Exception:  # noqa: BLE001 - spglib may fail on odd cells; the entry is kept without a space group
        return None, None, f"{formula}|?"
    n = len(structure)
    shares: dict[str, list[Fraction]] = {}
    for first, size in orbits.items():
        shares.setdefault(structure[first].species_string, []).append(Fraction(size, n))
    parts = [f"{el}:{','.join(str(f) for f in sorted(shares[el]))}" for el in sorted(shares)]
    return number, symbol, "|".join([formula, str(number), *parts])


def _is_damage(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGE_CODES
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


# ------------------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------------------
class Shortlist:
    """A shortlist stored in one SQLite file (created, or migrated to the current schema, on first use).

    Args:
        path: the SQLite file; default ``settings.app_data_dir()/shortlist.sqlite``.
        read_only: open the file read-only (it must exist): nothing is created, migrated or written, and
            every change raises ``InvalidInputError``.

    Raises:
        DamagedShortlistError: the file is not a database or SQLite's quick check finds damage.
        MissingResourceError: ``read_only`` and the file does not exist.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False):
        if str(path) == ":memory:":
            raise InvalidInputError("the shortlist needs a file (each call opens its own connection)")
        if path is not None and not isinstance(path, (str, Path)):
            raise InvalidInputError(f"a shortlist path is text or a Path, got {type(path).__name__}")
        self.path = Path(path) if path is not None else settings.app_data_dir() / DB_NAME
        self.read_only = bool(read_only)
        self._damage: str | None = None
        self._matcher = StructureMatcher()
        if self.read_only:
            if not self.path.is_file():
                raise MissingResourceError(f"no shortlist at {self.path}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def __repr__(self) -> str:
        return f"Shortlist({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    # -- connections ----------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection (autocommit; read-only when the store is); SQLite's damage errors become
        ``DamagedShortlistError`` and stop every later write."""
        if self._damage:
            raise DamagedShortlistError(self.path, self._damage)
        target, uri = (f"{self.path.resolve().as_uri()}?mode=ro", True) if self.read_only else (str(self.path), False)
        try:
            con = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=uri)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) if _is_damage(exc) else exc
        try:
            con.row_factory = sqlite3.Row
            yield con
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise self._damaged(exc) from None
            raise
        finally:
            con.close()

    def _damaged(self, detail: BaseException | str) -> DamagedShortlistError:
        self._damage = str(detail) or type(detail).__name__
        log.error("shortlist %s is damaged: %s", self.path, self._damage)
        return DamagedShortlistError(self.path, self._damage)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` (the write lock is taken at once); commits on success."""
        if self.read_only:
            raise InvalidInputError(f"{self} was opened read-only: no changes")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _open(self) -> None:
        """Check the file, then migrate it (under the write lock) only if its schema is behind."""
        with self._connect() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version:
                self._check(con)
        if version > SCHEMA_VERSION:
            log.warning("shortlist %s has schema %d, newer than this code's %d; using the known columns",
                        self.path, version, SCHEMA_VERSION)
        if version >= SCHEMA_VERSION or self.read_only:
            return
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("shortlist %s: journal mode %s (WAL unavailable on this filesystem?)", self.path, mode)
        with self._write() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]   # another process may have migrated
            for target in range(version, SCHEMA_VERSION):
                for step in MIGRATIONS[target]:
                    step(con) if callable(step) else con.execute(step)
            if version < SCHEMA_VERSION:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check(self, con: sqlite3.Connection) -> None:
        """SQLite's quick check (every page's structure, without index contents): damage raises."""
        problems = [r[0] for r in con.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise self._damaged("; ".join(problems))

    def check(self) -> list[str]:
        """SQLite's full integrity check of the file: ``[]`` when sound, else its findings (≤ 20)."""
        with self._connect() as con:
            found = [r[0] for r in con.execute("PRAGMA integrity_check(20)")]
        return [] if found == ["ok"] else found

    def schema_version(self) -> int:
        with self._connect() as con:
            return con.execute("PRAGMA user_version").fetchone()[0]

    # -- duplicates -----------------------------------------------------------------------------------
    def _duplicate(self, con: sqlite3.Connection, structure: Structure, key: str, token_string: str | None,
                   source: str, after_id: int = 0) -> tuple[int, str] | None:
        """The first entry (id > ``after_id``) holding this crystal, with the reason, or None."""
        if token_string:
            row = con.execute("SELECT id FROM entries WHERE token_string = ? AND source = ? AND id > ? LIMIT 1",
                              (token_string, source, after_id)).fetchone()
            if row is not None:
                return row["id"], f"same token string from {source or 'the same source'}"
        for row in con.execute("SELECT id, structure FROM entries WHERE fingerprint = ? AND id > ? ORDER BY id",
                               (key, after_id)):
            if self._matcher.fit(structure, Structure.from_dict(json.loads(row["structure"]))):
                return row["id"], "same structure by pymatgen's StructureMatcher"
        return None

    def find_duplicate(self, structure: Structure, token_string: str | None = None,
                       source: str = "") -> int | None:
        """Id of an entry holding this crystal already, or None."""
        structure = require_sane(structure, "cannot look this structure up")
        key = _symmetry(structure)[2]
        with self._connect() as con:
            hit = self._duplicate(con, structure, key, _text(token_string, "token_string") or None,
                                  _text(source, "source"))
        return None if hit is None else hit[0]

    # -- changes --------------------------------------------------------------------------------------
    def add(self, structure: Structure, *, properties: dict | None = None, source: str = "",
            token_string: str | None = None, notes: str = "", tags: str | Iterable[str] = (),
            allow_duplicate: bool = False) -> int:
        """Store a crystal; returns its id.

        Raises:
            DuplicateEntryError: the same crystal is already on the list (unless ``allow_duplicate``);
                ``.existing_id`` names it.
            InvalidInputError: not a usable structure (``core.structure_check``), properties that are not
                a dict, notes/source/token string that are not text, tags that are not texts.
        """
        structure = require_sane(structure, "cannot shortlist this structure")
        if properties is not None and not isinstance(properties, dict):
            raise InvalidInputError(f"properties must be a dict, got {type(properties).__name__}")
        formula = structure.composition.reduced_formula
        sg_number, sg_symbol, key = _symmetry(structure)
        now = _now()
        row = {
            "added_at": now, "updated_at": now, "formula": formula, "spacegroup": sg_number,
            "spacegroup_symbol": sg_symbol, "nsites": len(structure), "source": _text(source, "source"),
            "token_string": _text(token_string, "token_string") or None, "notes": _text(notes, "notes"),
            "tags": _dumps(list(normalize_tags(tags))), "properties": _dumps(properties or {}),
            "structure": _dumps(structure.as_dict()), "fingerprint": key,
        }
        seen = 0
        if not allow_duplicate:   # the slow comparison runs without the lock, on one consistent snapshot
            with self._connect() as con:
                con.execute("BEGIN")
                seen = con.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0]
                hit = self._duplicate(con, structure, key, row["token_string"], row["source"])
                con.execute("COMMIT")
            if hit is not None:
                self._refuse(hit, formula)
        with self._write() as con:
            if not allow_duplicate:   # only what was added since the snapshot
                hit = self._duplicate(con, structure, key, row["token_string"], row["source"], after_id=seen)
                if hit is not None:
                    self._refuse(hit, formula)
            cur = con.execute(f"INSERT INTO entries ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
            return int(cur.lastrowid)

    @staticmethod
    def _refuse(hit: tuple[int, str], formula: str) -> None:
        existing, reason = hit
        raise DuplicateEntryError(f"{formula} is already on the shortlist as #{existing}: {reason}", existing)

    def update(self, entry_id: int, *, notes: str | None = None, tags: str | Iterable[str] | None = None,
               properties: dict | None = None, expected: Mapping[str, Any] | None = None) -> None:
        """Change notes and/or tags (replaced), and/or merge ``properties`` into the stored ones.

        Args:
            expected: what the caller's edit started from, e.g. ``{"notes": "old", "tags": "a, b"}``: the
                change is made only if the stored values still equal these.

        Raises:
            EditConflictError: ``expected`` no longer holds (changed in another session); nothing written.
            InvalidInputError: no such entry, or values of the wrong type.
        """
        entry_id = as_entry_id(entry_id)
        changes: dict[str, Any] = {"updated_at": _now()}
        if notes is not None:
            changes["notes"] = _text(notes, "notes")
        if tags is not None:
            changes["tags"] = _dumps(list(normalize_tags(tags)))
        if properties is not None and not isinstance(properties, dict):
            raise InvalidInputError(f"properties must be a dict, got {type(properties).__name__}")
        if expected is not None and (not isinstance(expected, Mapping) or set(expected) - set(_EDITABLE)):
            raise InvalidInputError(f"expected must map some of {_EDITABLE} to their values, got {expected!r:.80}")
        with self._write() as con:
            row = con.execute("SELECT notes, tags, properties FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise InvalidInputError(f"no shortlist entry #{entry_id} (removed in another session?)")
            current = {"notes": row["notes"], "tags": tuple(json.loads(row["tags"]))}
            if expected is not None:
                wanted = {k: (normalize_tags(v) if k == "tags" else _text(v, k)) for k, v in expected.items()}
                changed = [k for k, v in wanted.items() if current[k] != v]
                if changed:
                    raise EditConflictError(
                        f"entry #{entry_id}: {' and '.join(changed)} changed in another session since this edit "
                        f"began; nothing saved", entry_id, current)
            if properties is not None:
                changes["properties"] = _dumps({**json.loads(row["properties"]), **properties})
            assignments = ", ".join(f"{k} = ?" for k in changes)
            con.execute(f"UPDATE entries SET {assignments} WHERE id = ?", (*changes.values(), entry_id))

    def remove(self, entry_id: int) -> bool:
        """Delete an entry; False if it was not there (e.g. already removed by another session)."""
        entry_id = as_entry_id(entry_id)
        with self._write() as con:
            return con.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount > 0

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
        entry_id = as_entry_id(entry_id)
        with self._connect() as con:
            row = con.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no shortlist entry #{entry_id} (removed in another session?)")
        return self._entry(row)

    def entries(self, ids: Sequence[int] | None = None) -> list[ShortlistEntry]:
        """All entries (by id), or those with the given ids in that order (missing ids are skipped)."""
        if ids is None:
            with self._connect() as con:
                return [self._entry(r) for r in con.execute("SELECT * FROM entries ORDER BY id")]
        wanted = [as_entry_id(i) for i in ids]
        if not wanted:
            return []
        with self._connect() as con:
            rows = {r["id"]: r for r in con.execute(
                f"SELECT * FROM entries WHERE id IN ({', '.join('?' * len(set(wanted)))})", tuple(set(wanted)))}
        return [self._entry(rows[i]) for i in wanted if i in rows]

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


# ------------------------------------------------------------------------------------------------------
# Checking and salvaging a file (always on a copy: the original is never opened for writing)
# ------------------------------------------------------------------------------------------------------
@dataclass
class SalvageReport:
    """What ``salvage`` found: ids copied, ids that could not be read (known to exist, from an index, or
    probed), and SQLite's findings on the source."""

    source: Path
    out: Path | None
    recovered: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lost = f", {len(self.unreadable)} unreadable (ids {_ranges(self.unreadable)})" if self.unreadable else ""
        state = f"damaged: {len(self.findings)} finding(s)" if self.findings else "integrity check ok"
        if self.out is None:
            return f"{len(self.recovered)} entries readable in {self.source}{lost} ({state})"
        return f"{len(self.recovered)} entries recovered into {self.out} from {self.source}{lost} ({state})"


def _ranges(ids: Sequence[int]) -> str:
    """'1-3, 7' for [1, 2, 3, 7]."""
    out: list[str] = []
    for i in sorted(ids):
        if out and i == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


@contextmanager
def _copy_of(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a private copy of ``path`` (and its WAL file, whose commits count)."""
    if not Path(path).is_file():
        raise MissingResourceError(f"no shortlist at {path}")
    with tempfile.TemporaryDirectory(prefix="shortlist-check-") as tmp:
        copy = Path(tmp) / "copy.sqlite"
        shutil.copyfile(path, copy)
        wal = Path(f"{path}-wal")
        if wal.is_file():
            shutil.copyfile(wal, f"{copy}-wal")
        con = sqlite3.connect(copy, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()


def _try(con: sqlite3.Connection, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.DatabaseError:
        return []


def check_file(path: str | Path) -> list[str]:
    """SQLite's integrity check of a shortlist file, run on a copy: ``[]`` when sound, else its findings."""
    with _copy_of(Path(path)) as con:
        try:
            found = [r[0] for r in con.execute("PRAGMA integrity_check(20)")]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
    return [] if found == ["ok"] else found


def _candidate_ids(con: sqlite3.Connection) -> tuple[set[int], int]:
    """(ids some index or the table still lists, the highest id worth probing)."""
    known: set[int] = set()
    for index, column in (("entries_formula", "formula"), ("entries_fingerprint", "fingerprint")):
        known |= {r[0] for r in _try(con, f"SELECT id FROM entries INDEXED BY {index} WHERE {column} >= ''")}
    known |= {r[0] for r in _try(con, "SELECT id FROM entries")}
    seq = _try(con, "SELECT seq FROM sqlite_sequence WHERE name = 'entries'")
    pages = _try(con, "PRAGMA page_count")
    highest = max([*known, seq[0][0] if seq else 0, 0])
    if not highest and pages:   # nothing says how far ids go: a page holds a few entries at most
        highest = 64 * int(pages[0][0])
    return known, highest


def salvage(path: str | Path, out: str | Path | None) -> SalvageReport:
    """Copy every readable entry of the shortlist ``path`` into a new shortlist ``out`` (ids kept).

    Reads a private copy entry by entry (one id at a time, so a damaged page loses only the entries stored
    on it). With ``out=None`` only counts. The source file is never written.

    Raises:
        InvalidInputError: ``out`` exists already (nothing is overwritten) or is the source.
        MissingResourceError: no file at ``path``.
    """
    path = Path(path)
    target = Path(out) if out is not None else None
    if target is not None and (target.exists() or target.resolve() == path.resolve()):
        raise InvalidInputError(f"{target} exists; salvage writes a new file only")
    report = SalvageReport(path, target, findings=check_file(path))
    rows: list[dict[str, Any]] = []
    with _copy_of(path) as con:
        known, highest = _candidate_ids(con)
        for i in range(1, highest + 1):
            try:
                row = con.execute("SELECT * FROM entries WHERE id = ?", (i,)).fetchone()
                if row is None:
                    if i in known:
                        report.unreadable.append(i)
                    continue
                record = dict(row)
                Shortlist._entry(row)   # the stored JSON decodes into an entry
            except Exception:  # noqa: BLE001 - a damaged page, or a row whose JSON did not survive
                report.unreadable.append(i)
                continue
            rows.append(record)
            report.recovered.append(i)
    if target is not None:
        fresh = Shortlist(target)
        with fresh._write() as con:
            for record in rows:
                if not record.get("fingerprint"):
                    record["fingerprint"] = None
                columns = [c for c in record if c in _COLUMNS or c in ("properties", "structure", "fingerprint")]
                con.execute(f"INSERT INTO entries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            tuple(record[c] for c in columns))
            _backfill_fingerprints(con)
    return report
