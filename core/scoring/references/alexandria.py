"""The Alexandria PBE convex hull, the reference of the paper's E_hull reward, as ``hull="alexandria"``.

File: ``convex_hull_pbe_2023.12.29.json.bz2`` from the Alexandria database (alexandria.icams.rub.de, CC BY
4.0; ``python -m core download alexandria-hull`` puts it in ``CFRL_DATA_DIR/alexandria/``; another path:
``CFRL_ALEXANDRIA_HULL``). The reference implementation (deepmodeling/CrystalFormer, ``train_ppo
--convex_path``) reads it as one JSON object whose ``"entries"`` list holds pymatgen
``ComputedStructureEntry`` dicts; it drops each ``structure`` to save memory, keeps the entries whose
``data["elements"]`` lie within the query's elements, builds a ``PhaseDiagram`` from
``ComputedEntry.from_dict`` of them and places the MLIP energy after ``MaterialsProject2020Compatibility``.
Alexandria's PBE(+U) energies follow MP's settings and carry their MP2020 corrections in the entries, so
this is a total-energy reference like an MP entries file (Kind A): MP-scale MLIPs are compared on
total energies, others on formation energies (``core.scoring.hull.DFTEntriesReference``).

Read here: bz2, gzip or plain JSON, the ``{"entries": [...]}`` object or a bare list; entries without
``data["elements"]`` get them from their composition. Entries are indexed by element set, so a
chemical system's phases are found without scanning the whole file.
"""
from __future__ import annotations

import bz2
import gzip
import json
import os
from pathlib import Path
from typing import Any

from pymatgen.entries.computed_entries import ComputedEntry

from core import settings
from core.errors import InvalidInputError, MissingResourceError
from core.scoring.hull import DFTEntriesReference

HULL_FILE = "convex_hull_pbe_2023.12.29.json.bz2"
PATH_ENV = "CFRL_ALEXANDRIA_HULL"


def alexandria_hull_path() -> Path:
    """``$CFRL_ALEXANDRIA_HULL`` or ``CFRL_DATA_DIR/alexandria/convex_hull_pbe_2023.12.29.json.bz2``."""
    value = os.environ.get(PATH_ENV)
    return Path(value).expanduser() if value else settings.data_dir() / "alexandria" / HULL_FILE


def _open(path: Path):
    head = path.open("rb").read(3)
    if head.startswith(b"BZh"):
        return bz2.open(path, "rt")
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rt")
    return path.open("rt")


def read_alexandria_hull(path: str | Path | None = None) -> dict[frozenset[str], list[ComputedEntry]]:
    """The hull's entries (total energies with their corrections, no structures), by element set.

    Raises:
        MissingResourceError: the file is absent (the message says how to download it).
        InvalidInputError: it is not an Alexandria-format hull file.
    """
    path = Path(path) if path else alexandria_hull_path()
    settings.require(path, "Alexandria convex hull",
                     f"Run `python -m core download alexandria-hull` (or the app's Models page), or put {HULL_FILE} "
                     f"there by hand, or set {PATH_ENV}=/path/to/{HULL_FILE}.")
    try:
        with _open(path) as fh:
            raw = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a (bz2/gzip) JSON Alexandria hull file: {exc}") from exc
    items = raw.get("entries") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise InvalidInputError(f"{path}: expected {{\"entries\": [ComputedStructureEntry dicts]}} (Alexandria format)")
    index: dict[frozenset[str], list[ComputedEntry]] = {}
    for k, item in enumerate(items):
        try:
            item = {key: value for key, value in item.items() if key != "structure"}   # as the reference does
            entry = ComputedEntry.from_dict(item)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{path}: entry {k} is not a pymatgen ComputedEntry dict: {exc}") from exc
        elements = (item.get("data") or {}).get("elements") or [el.symbol for el in entry.composition.elements]
        index.setdefault(frozenset(elements), []).append(entry)
    return index


class AlexandriaReference(DFTEntriesReference):
    """Phases of the Alexandria PBE convex hull (MP2020-compatible DFT total energies)."""

    def __init__(self, path: str | Path | None = None, mlip: Any = None) -> None:
        self.path = Path(path) if path else alexandria_hull_path()
        self.index = read_alexandria_hull(self.path)
        count = sum(len(v) for v in self.index.values())
        super().__init__(name=f"alexandria:{self.path.name.split('.json')[0]}",
                         description=f"{count} Alexandria PBE convex-hull entries (MP2020-compatible) from {self.path}",
                         mlip=mlip)
        self._elements = frozenset(el for key in self.index for el in key)

    def covered_elements(self) -> frozenset[str]:
        return self._elements

    def _dft_entries(self, elements: frozenset[str]) -> list[Any]:
        return [entry for key, entries in self.index.items() if key <= elements for entry in entries]
