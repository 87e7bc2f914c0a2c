"""Structures that enter the Pool from outside the session: uploaded files (CIF, POSCAR, extxyz,
pymatgen JSON) and the results of a large screen (``python -m core screen --out FOLDER``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.pool import SCREEN, Pool

DEFAULT_SCREEN_ROWS = 2000      # rows of a screen opened in the browser: the Pareto front, then the best FoM
MAX_SCREEN_ROWS = 20_000        # ~0.5 ms per row to rebuild its Structure; Explore's SVG plot slows beyond this


@dataclass
class UploadReport:
    """What happened to one uploaded file: structures added, problems found."""

    name: str
    added: int = 0
    errors: list[str] = field(default_factory=list)


def _without_name(message: str, name: str) -> str:
    """A reader message without its leading 'file.cif: ' (the page shows the file's name once)."""
    for prefix in (f"{name}: ", f"{name}#"):
        if message.startswith(prefix):
            return message[len(name) + 2:] if prefix.endswith(": ") else message[len(name):]
    return message


def disorder_problem(structure) -> str | None:
    """Why a disordered structure (partial occupancies) cannot be scored, naming the fix; None when ordered."""
    if structure.is_ordered:
        return None
    mixed = sorted({site.species.reduced_formula for site in structure if not site.is_ordered})
    return (f"disordered: partial occupancies ({', '.join(mixed[:3])}); the models need one element per site. "
            "Order it first (e.g. pymatgen's OrderDisorderedStructureTransformation) or upload an ordered supercell.")


def ingest(pool: Pool, name: str, data: bytes) -> UploadReport:
    """Read one uploaded file into ``pool`` as the run ``name``. Never raises for a bad file.

    A structure no model can take (disordered) becomes a row saying why, so it is listed, explained,
    never sent to a scorer, and removed with its file; the file's other structures are scored.
    """
    from core.export import read_structures

    report = UploadReport(name)
    try:
        structures, errors = read_structures(data, name)
    except Exception as exc:  # noqa: BLE001 - a reader bug must not lose the other files
        return UploadReport(name, 0, [f"{type(exc).__name__}: {exc}"])
    report.errors = [_without_name(str(e), name) for e in errors]
    usable = []
    for k, structure in enumerate(structures):
        problem = disorder_problem(structure)
        if problem is None:
            usable.append(structure)
            continue
        label = (structure.properties or {}).get("label") or f"{name}#{k + 1}"
        pool.add_problem(name, structure.composition.reduced_formula, problem)
        where = label[len(name):] if label.startswith(name) else label     # "" or "#2" (several in one file)
        report.errors.append(f"{where}: {problem}" if where else problem)
    report.added = len(pool.add_structures(usable, source=name))
    if not structures and not report.errors:
        report.errors.append("no structure found in this file")
    return report


def sync_uploads(pool: Pool, files, known: dict, reports: dict) -> None:
    """Make the pool follow the uploader: new files are read in, files removed from it lose their structures.

    ``known``: (file name, size) -> run name, ``reports``: run name -> UploadReport (kept in the session).
    """
    present = {(f.name, f.size): f for f in files or []}
    for tag in [t for t in known if t not in present]:
        run = known.pop(tag)
        pool.remove_run(run)
        reports.pop(run, None)
    for tag, f in present.items():
        if tag in known:
            continue
        run = f.name if f.name not in pool.runs else f"{f.name} ({len(known) + 1})"
        report = ingest(pool, run, f.getvalue())
        known[tag] = run
        reports[run] = report


def remove_upload(pool: Pool, run: str, known: dict, reports: dict) -> None:
    """Remove an uploaded file's structures (the Remove button; the uploader may still list the file)."""
    pool.remove_run(run)
    reports.pop(run, None)
    for tag in [t for t, r in known.items() if r == run]:
        known[tag] = None   # still in the uploader, but removed: not read again


# ---------------------------------------------------------------------------------------------- screens
@dataclass
class ScreenReport:
    """What opening a screen folder did: rows on disk, rows now in the pool, the screen's progress."""

    folder: str
    source: str = ""
    rows: int = 0              # finished rows in the folder
    added: int = 0             # rows now in the pool (at most the row limit)
    built: int = 0             # of those, rows with a structure
    batches_done: int = 0
    n_batches: int = 0
    status: str | None = None  # running | finished | interrupted | failed (the screen's manifest)
    spec: dict = field(default_factory=dict)
    error: str | None = None

    def describe(self) -> str:
        """'2,000 best (Pareto front, then FoM) of 10,000 rows (8/16 batches, running); 1,990 with a structure'."""
        if self.error:
            return self.error
        where = f"{self.batches_done}/{self.n_batches} batches, {self.status or 'status unknown'}"
        if not self.rows:
            return f"no batch finished yet ({where}); reload later"
        kept = f"{self.added:,}" if self.added == self.rows else f"the best {self.added:,} (Pareto front, then FoM) of {self.rows:,}"
        return f"{kept} rows ({where}); {self.built:,} with a structure"


def screen_folder(text: str) -> Path:
    """The folder a user typed (``~`` expanded; a path to its manifest.json means its folder).

    Raises:
        InvalidInputError: empty, missing, or a file other than a screen manifest.
    """
    from core.errors import InvalidInputError

    if not text or not text.strip():
        raise InvalidInputError("type the folder a screen wrote (the --out FOLDER of `python -m core screen`)")
    path = Path(text.strip()).expanduser()
    if path.is_file() and path.name == "manifest.json":
        path = path.parent
    if not path.exists():
        raise InvalidInputError(f"{path} does not exist (a screen writes the folder given to `python -m core screen --out`)")
    if not path.is_dir():
        raise InvalidInputError(f"{path} is a file, not a screen folder (the folder given to `python -m core screen --out`)")
    return path


def _plain(value: Any) -> Any:
    """A score-row value as the scoring pipeline gives it: None for missing, Python scalars."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def keep_rows(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of a screen, in sample order: the Pareto front (max E_g, max ε_elec)
    first, then the highest FoM, then rows without FoM (scoring errors, unbuildable samples)."""
    from app.pool import numeric
    from core.scoring.pareto import pareto_mask

    if len(frame) <= max_rows:
        return frame
    fom = numeric(frame, "fom_ev")
    front = pareto_mask(numeric(frame, "band_gap_ev"), numeric(frame, "eps_elec"))
    order = np.lexsort((frame["sample_id"].to_numpy(), -np.nan_to_num(fom, nan=-np.inf), ~front))
    return frame.iloc[np.sort(order[:max_rows])]


def screen_entries(frame: pd.DataFrame):
    """(entry fields, score row) per row of ``core.screen.load_screen(..., structures=False)`` for ``Pool.add_scored``.

    The score row holds the scoring pipeline's columns the screen stored (None where missing) and the
    screen's ``sample_id``; a sample that could not be built gets no score row, only its builder's reason.
    """
    from core.scoring.pipeline import COLUMNS
    from core.screen import structure_from_json

    columns = [c for c in COLUMNS if c in frame]
    for _, r in frame.iterrows():
        build_error = _plain(r.get("build_error"))
        structure, problem = None, build_error
        if build_error is None:
            try:
                # kept as stored, however absurd (the user may look at it): the doors it goes through next
                # (symmetry, viewer, shortlist, tokens) each pass core.structure_check and refuse it there
                structure = structure_from_json(r.get("structure_json"))
            except Exception as exc:  # noqa: BLE001 - one unreadable row never loses the others
                problem = f"stored structure unreadable: {exc}"
            if structure is None and problem is None:
                problem = "no structure stored"
        formula = _plain(r.get("formula")) or (structure.composition.reduced_formula if structure is not None else None)
        fields = dict(structure=structure, token_string=_plain(r.get("token_string")), logp=_plain(r.get("logp")),
                      spacegroup=_plain(r.get("generated_spacegroup")), formula=formula, error=problem)
        row = {c: _plain(r[c]) for c in columns} | {"sample_id": int(r["sample_id"])} if structure is not None else None
        yield fields, row


def open_screen(pool: Pool, folder: str, max_rows: int = DEFAULT_SCREEN_ROWS) -> ScreenReport:
    """Load a screen's finished rows into ``pool`` as SCREEN entries with their scores.

    Opening the same folder again replaces its rows (a running screen shows its new batches). Never
    raises: a folder that is not a screen, or unreadable files, come back as ``report.error``.
    """
    from core.errors import CrystalFormerError
    from core.screen import load_screen

    report = ScreenReport(str(folder))
    try:
        path = screen_folder(folder)
        report.folder = str(path)
        frame = load_screen(path, structures=False)
    except CrystalFormerError as exc:
        report.error = str(exc)
        return report
    except Exception as exc:  # noqa: BLE001 - e.g. a damaged Parquet file
        report.error = f"cannot read the screen in {folder}: {type(exc).__name__}: {exc}"
        return report
    key = str(path.resolve())
    known = pool.screens.get(key)
    if known is not None:
        source = known["source"]
    else:
        taken = {s["source"] for s in pool.screens.values()}
        source = f"screen {path.name}" if f"screen {path.name}" not in taken else f"screen {key}"
    attrs = frame.attrs
    report.source, report.rows = source, len(frame)
    report.batches_done, report.n_batches = int(attrs.get("batches_done", 0)), int(attrs.get("n_batches", 0))
    report.status, report.spec = attrs.get("status"), dict(attrs.get("spec") or {})
    kept = keep_rows(frame, max(1, int(max_rows)))
    pool.clear(SCREEN, source)
    ids = pool.add_scored(screen_entries(kept), SCREEN, source)
    report.added = len(ids)
    report.built = sum(pool.entries[i].structure is not None for i in ids)
    pool.screens[key] = {"source": source, "folder": str(path), "max_rows": int(max_rows), "report": report}
    return report


def close_screen(pool: Pool, key: str) -> None:
    """Remove an opened screen's rows from ``pool``."""
    info = pool.screens.pop(key, None)
    if info is not None:
        pool.clear(SCREEN, info["source"])
