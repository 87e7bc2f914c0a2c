"""Reading a screen's rows (finished or still running) and summarising them.

``load_screen(folder)`` returns one row per finished sample, ordered by ``sample_id``:

* sample columns: ``sample_id``, ``batch``, ``generated_spacegroup`` (the space group it was sampled
  in), ``token_string``, ``logp`` and ``logp_w/a/xyz/l`` (nats), ``build_error`` (why no structure
  could be built, else None);
* the scorer's columns, by default those of ``core.scoring.pipeline.COLUMNS`` (``formula``,
  ``spacegroup`` found by spglib, energies in eV and eV/atom, ``e_above_hull`` eV/atom,
  ``band_gap_ev``, ``eps_elec``, ``fom_ev``, validity, relaxation, ``novel``, ``unique``, ``error``);
* ``structure_json`` (the generated crystal as pymatgen JSON), ``worker`` ("host:pid") and
  ``structure`` (pymatgen Structure or None; only with ``structures=True``).

``unique`` is screen-wide (first of each StructureMatcher group in sample order, as
``core.scoring.metrics`` defines it) once a run has finished; while a screen runs it is the scoring
pipeline's per-batch flag (``frame.attrs["unique_scope"]`` says which). Uniqueness is judged on the
generated structures, the pipeline's final structures when nothing is relaxed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.screen.store import ScreenStore
from core.screen.work import SAMPLE_COLUMNS, STRUCTURE_COLUMN, WORKER_COLUMN

UNIQUE_TABLE = "unique.parquet"
SUMMARY_FILE = "summary.json"
TOP_FOM = 10
TOP_FOM_COLUMNS = ("sample_id", "formula", "generated_spacegroup", "spacegroup", "fom_ev", "band_gap_ev", "eps_elec",
                   "e_above_hull")


def structure_from_json(text: Any):
    """A pymatgen Structure from ``structure_json`` (None for a missing value)."""
    from pymatgen.core import Structure

    return Structure.from_str(text, fmt="json") if isinstance(text, str) and text else None


def load_screen(folder: str | Path, structures: bool = True) -> pd.DataFrame:
    """All finished rows of the screen in ``folder`` (see the module docstring for the columns).

    Safe while the screen runs: batch files appear whole or not at all. ``frame.attrs`` holds
    ``n_batches``, ``batches_done``, ``complete``, ``status`` (running | finished | interrupted | failed),
    ``unique_scope`` ("screen" or "batch") and ``spec`` (the screen's parameters).

    Raises:
        InvalidInputError: ``folder`` is not a screen folder.
    """
    store = ScreenStore(folder)
    manifest = store.manifest()
    frame = store.read_rows()
    if frame.empty:
        frame = pd.DataFrame(columns=[*SAMPLE_COLUMNS, STRUCTURE_COLUMN, WORKER_COLUMN])
    frame = _numeric_columns(frame)
    scope = "batch"
    unique = store.read_table(UNIQUE_TABLE)
    if unique is not None and len(frame) and len(unique) == len(frame) and unique["sample_id"].equals(frame["sample_id"]):
        frame["unique"] = unique["unique"].astype(object).where(unique["unique"].notna(), None).to_numpy()
        scope = "screen"
    if structures:
        frame["structure"] = pd.Series([structure_from_json(t) for t in frame[STRUCTURE_COLUMN]], index=frame.index,
                                       dtype=object)
    done = int(frame["batch"].nunique()) if len(frame) else 0
    frame.attrs.update(n_batches=int(manifest["n_batches"]), batches_done=done, complete=done == manifest["n_batches"],
                       status=manifest.get("status"), unique_scope=scope, spec=manifest.get("spec", {}))
    return frame


def _numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding only numbers and missing values (a batch where a column was all None reads
    back as object) become float64 with NaN; flags (True/False/None) and text stay as they are."""
    import numbers

    for name in frame.columns[frame.dtypes == object]:
        values = [v for v in frame[name] if v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))]
        if values and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame


def _flag(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return bool(value)


def screen_uniqueness(frame: pd.DataFrame) -> pd.DataFrame:
    """Screen-wide ``unique`` per sample_id: True for the first structure of each kind in sample order,
    False for a later match, None for rows without a valid structure (``struct_valid`` not True)."""
    from core.scoring.metrics import UniquenessTracker

    tracker = UniquenessTracker()
    valid = frame["struct_valid"] if "struct_valid" in frame else frame[STRUCTURE_COLUMN].notna()
    flags = []
    for text, ok in zip(frame[STRUCTURE_COLUMN], valid):
        structure = structure_from_json(text) if _flag(ok) else None
        flags.append(tracker.check_and_add(structure) if structure is not None else None)
    return pd.DataFrame({"sample_id": frame["sample_id"].to_numpy(), "unique": pd.array(flags, dtype="boolean")})


def finalize(folder: str | Path) -> dict[str, Any]:
    """Write screen-wide uniqueness and ``summary.json`` for the rows on disk; returns the summary."""
    store = ScreenStore(folder)
    rows = load_screen(folder, structures=False)
    if len(rows):
        store.write_table(UNIQUE_TABLE, screen_uniqueness(rows))
        rows = load_screen(folder, structures=False)
    summary = summarize_screen(rows)
    store.write_json(SUMMARY_FILE, summary)
    return summary


def summarize_screen(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts (valid, stable, unique, novel, S.U.N.), the pipeline's rates and the top rows by FoM (eV)."""
    from core.scoring.metrics import is_stable, summarize

    column = lambda name: [_flag(v) for v in frame[name]] if name in frame else [None] * len(frame)  # noqa: E731
    e_hull = frame["e_above_hull"] if "e_above_hull" in frame else pd.Series([None] * len(frame), dtype=object)
    stable = [is_stable(None if pd.isna(v) else float(v)) for v in e_hull]
    unique, novel = column("unique"), column("novel")
    has_novelty = any(v is not None for v in novel)
    sun = [s and bool(u) and bool(n) for s, u, n in zip(stable, unique, novel)]
    valid = [bool(a) and bool(b) for a, b in zip(column("struct_valid"), column("comp_valid"))]
    counts = {
        "samples": len(frame),
        "built": int(frame[STRUCTURE_COLUMN].notna().sum()) if len(frame) else 0,
        "scored": int(frame["error"].isna().sum()) if "error" in frame else None,
        "valid": sum(valid), "stable": sum(stable), "unique": sum(bool(u) for u in unique),
        "novel": sum(bool(n) for n in novel) if has_novelty else None,
        "sun": sum(sun) if has_novelty else None,
    }
    top: list[dict[str, Any]] = []
    if "fom_ev" in frame and len(frame):
        best = frame.assign(_fom=pd.to_numeric(frame["fom_ev"], errors="coerce")).dropna(subset=["_fom"])
        best = best.sort_values("_fom", ascending=False, kind="stable").head(TOP_FOM)
        top = [{k: _plain(row[k]) for k in TOP_FOM_COLUMNS if k in best} for _, row in best.iterrows()]
    rates = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summarize(frame).items()}
    return {"counts": counts, "rates": rates, "top_fom": top, "unique_scope": frame.attrs.get("unique_scope"),
            "batches_done": frame.attrs.get("batches_done"), "n_batches": frame.attrs.get("n_batches"),
            "complete": frame.attrs.get("complete")}


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar: None for missing, int for whole numbers (space groups, ids)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines: counts with percentages, then the top figures of merit."""
    counts = summary["counts"]
    n = counts["samples"] or 1
    shown = []
    for key, label in (("valid", "valid"), ("stable", "stable (E_hull < 0.1 eV/atom)"), ("unique", "unique"),
                       ("novel", "novel"), ("sun", "S.U.N.")):
        value = counts.get(key)
        shown.append(f"{label} {'n/a' if value is None else f'{value:,} ({100 * value / n:.1f}%)'}")
    lines = [f"summary: {counts['samples']:,} samples ({summary.get('batches_done')}/{summary.get('n_batches')} batches); "
             + ", ".join(shown)]
    for i, row in enumerate(summary.get("top_fom", [])[:5], 1):
        lines.append(f"  top FoM {i}: {row.get('formula')} (space group {_group(row)}) "
                     f"FoM {row['fom_ev']:.3g} eV, E_hull {_num(row.get('e_above_hull'))} eV/atom, sample {row['sample_id']}")
    if not summary.get("top_fom"):
        lines.append("  top FoM: none (no row has a figure of merit)")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3g}"


def _group(row: dict[str, Any]) -> str:
    value = row.get("spacegroup") or row.get("generated_spacegroup")
    return "?" if value is None else str(int(value))
