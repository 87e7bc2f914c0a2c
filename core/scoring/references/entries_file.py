"""Read a convex-hull reference from an entries file (gzip or plain JSON).

Two layouts are accepted (see ``../shared/data/README.md``):

* **Kind A**: a list of pymatgen ``ComputedStructureEntry`` / ``ComputedEntry`` dicts with *total*
  DFT energies (eV) that already carry their MP2020 corrections (``MPRester.get_entries_in_chemsys``
  output, ``shared/data/hulls/Li-Co-Ni-O.json.gz``). A dict ``{key: entry dict}`` is accepted too
  (``mp-elemental-reference-entries.json.gz``).
* **Kind B**: slim formation-energy entries (``composition``, ``energy`` = formation energy of the
  cell in eV, ``e_form_per_atom``), as in the Alexandria ternaries of ``shared/data/hulls/``. The
  elements are implied at zero energy.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from core.errors import InvalidInputError, MissingResourceError


@dataclass
class EntriesFile:
    """The entries of one file on its own energy scale."""

    path: Path
    kind: Literal["total", "formation"]   # Kind A: total DFT energies; Kind B: formation energies
    entries: list[Any]                    # ComputedEntry (kind "total") or PDEntry (kind "formation")

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(el.symbol for entry in self.entries for el in entry.composition.elements)


def _load_json(path: Path) -> Any:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a JSON (or gzipped JSON) entries file: {exc}") from exc


def _kind_a_entry(item: dict[str, Any]) -> ComputedEntry:
    cls = ComputedStructureEntry if "structure" in item else ComputedEntry
    return cls.from_dict(item)


def _kind_b_entry(item: dict[str, Any]) -> PDEntry:
    return PDEntry(Composition(item["composition"]), float(item["energy"]), name=str(item.get("entry_id", "")))


def read_entries_file(path: str | Path) -> EntriesFile:
    """Parse an entries file of Kind A or Kind B.

    Raises:
        MissingResourceError: the file does not exist.
        InvalidInputError: it is not JSON, or its items are neither layout.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingResourceError(
            f"hull reference entries file {path} not found. Pass a pymatgen ComputedStructureEntry JSON list "
            "(e.g. ../shared/data/hulls/Na-Fe-P-O.json.gz), 'bundled' or 'mp-api'."
        )
    raw = _load_json(path)
    items = list(raw.values()) if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise InvalidInputError(f"{path} holds no list of entry dicts (pymatgen ComputedEntry JSON expected)")
    first = items[0]
    try:
        if "@class" in first or "structure" in first:
            entries, kind = [_kind_a_entry(item) for item in items], "total"
        elif {"composition", "energy", "e_form_per_atom"} <= first.keys():
            entries, kind = [_kind_b_entry(item) for item in items], "formation"
            for symbol in sorted({el.symbol for e in entries for el in e.composition.elements}):
                entries.append(PDEntry(Composition(symbol), 0.0, name=f"{symbol} (elemental reference, 0 eV)"))
        else:
            raise InvalidInputError(
                f"{path}: entries have keys {sorted(first)[:8]}; expected pymatgen ComputedEntry dicts "
                "(Kind A) or composition/energy/e_form_per_atom (Kind B)"
            )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{path}: cannot read entries: {exc}") from exc
    return EntriesFile(path=path, kind=kind, entries=entries)
