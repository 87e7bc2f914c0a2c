"""Structures uploaded by the user (CIF, POSCAR, extxyz, pymatgen JSON) into a Pool."""
from __future__ import annotations

from dataclasses import dataclass, field

from app.pool import Pool


@dataclass
class UploadReport:
    """What happened to one uploaded file: structures added, problems found."""

    name: str
    added: int = 0
    errors: list[str] = field(default_factory=list)


def reader_unavailable() -> str | None:
    try:
        from core.export import read_structures  # noqa: F401
    except ImportError:
        return "Reading uploads needs core/export.py, which is not in this checkout yet."
    return None


def ingest(pool: Pool, name: str, data: bytes) -> UploadReport:
    """Read one uploaded file into ``pool`` (source = file name). Never raises for a bad file."""
    from core.export import read_structures

    report = UploadReport(name)
    try:
        structures, errors = read_structures(data, name)
    except Exception as exc:  # noqa: BLE001 - a reader bug must not lose the other files
        return UploadReport(name, 0, [f"{type(exc).__name__}: {exc}"])
    report.errors = [str(e) for e in errors]
    report.added = len(pool.add_structures(structures, source=name))
    if not structures and not report.errors:
        report.errors.append("no structure found in this file")
    return report
