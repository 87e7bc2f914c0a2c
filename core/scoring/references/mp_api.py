"""Convex-hull reference entries from the Materials Project API (optional; needs ``MP_API_KEY``).

Entries come from ``MPRester.get_entries_in_chemsys`` with the GGA/GGA+U thermo type, i.e. the
MP2020-corrected PBE(+U) energies that an MP-compatible MLIP is trained to reproduce. Each
chemical system is fetched once and cached under ``cache_dir()/hull/mp-api/``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from pymatgen.entries.computed_entries import ComputedStructureEntry

from core import settings
from core.errors import MissingResourceError, ScoringError

ENV_KEY = "MP_API_KEY"
THERMO_TYPES = ["GGA_GGA+U"]


def mp_api_key(api_key: str | None = None) -> str:
    """The API key from the argument or ``$MP_API_KEY``; a clear MissingResourceError without one."""
    key = api_key or os.environ.get(ENV_KEY, "").strip()
    if not key:
        raise MissingResourceError(
            "the mp-api hull reference needs a Materials Project API key: set MP_API_KEY "
            "(free at https://next-gen.materialsproject.org/api), or use --hull bundled (offline) "
            "or an entries file such as ../shared/data/hulls/Na-Fe-P-O.json.gz"
        )
    return key


class MPEntriesClient:
    """Fetches and caches the MP entries of chemical systems."""

    def __init__(self, api_key: str | None = None, cache_root: Path | None = None) -> None:
        self.api_key = mp_api_key(api_key)
        self.cache_root = cache_root or settings.cache_dir() / "hull" / "mp-api"

    def entries(self, elements: frozenset[str]) -> list[ComputedStructureEntry]:
        chemsys = "-".join(sorted(elements))
        path = self.cache_root / f"{chemsys}.json.gz"
        if path.is_file():
            with gzip.open(path, "rt") as fh:
                return [ComputedStructureEntry.from_dict(d) for d in json.load(fh)]
        try:
            from mp_api.client import MPRester

            with MPRester(self.api_key, mute_progress_bars=True) as rester:
                entries = rester.get_entries_in_chemsys(sorted(elements), additional_criteria={"thermo_types": THERMO_TYPES})
        except Exception as exc:  # noqa: BLE001 - network, auth, server: all become one row-level message
            raise ScoringError(f"Materials Project API request for {chemsys} failed: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as fh:
            json.dump([entry.as_dict() for entry in entries], fh)
        return list(entries)
