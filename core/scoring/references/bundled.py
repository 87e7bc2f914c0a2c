"""The compound structures of the bundled convex-hull reference: matbench_dielectric plus the Materials
Project entries of ``shared/data/hulls`` that come with structures (Kind A: Li-Co-Ni-O, Na-Fe-P-O).

Rows are named ``"<matbench row>"`` ("0" … "4763", as the reference-energy caches have always keyed
them) and ``"mp:<entry_id>"`` for the MP entries (deduplicated by entry id across files). Only the
structures are used: every energy is recomputed with the scoring MLIP (``references.store``), so the
DFT energies of those files never mix with MLIP energies. A missing hull folder leaves matbench alone
(``sources`` says which were read).
"""
from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

from pymatgen.core import Composition, Structure

from core.scoring.references.matbench import MatbenchDielectric, load_matbench_dielectric

MP_PREFIX = "mp:"


def _kind_a_items(path: Path) -> list[dict]:
    """The entry dicts of a Kind A file (those with a structure); [] for any other file."""
    try:
        with gzip.open(path, "rt") as fh:
            items = json.load(fh)
    except (OSError, ValueError):
        return []
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("structure"), dict)]


class BundledCompounds:
    """Reference compound structures by row name, with their element sets known up front."""

    def __init__(self, matbench: MatbenchDielectric, hull_dir: Path | None) -> None:
        self.matbench = matbench
        self.element_sets: dict[str, frozenset[str]] = dict(matbench.element_sets)
        self.rows: list[str] = list(matbench.rows)
        self.sources = ["matbench_dielectric (crystal-toolkit)"]
        self._mp: dict[str, dict] = {}
        self._structures: dict[str, Structure] = {}
        for path in sorted(hull_dir.glob("*.json.gz")) if hull_dir is not None and hull_dir.is_dir() else ():
            items = _kind_a_items(path)
            if not items:
                continue
            self.sources.append(f"{path.name} (Materials Project, {len(items)} entries)")
            for item in items:
                row = MP_PREFIX + str(item.get("entry_id") or item["data"]["material_id"])
                if row in self._mp:
                    continue
                self._mp[row] = item["structure"]
                self.element_sets[row] = frozenset(
                    sp["element"] for site in item["structure"]["sites"] for sp in site["species"])
                self.rows.append(row)

    def rows_within(self, elements: frozenset[str] | set[str]) -> list[str]:
        """Rows whose elements all lie in ``elements``."""
        allowed = frozenset(elements)
        return [row for row in self.rows if self.element_sets[row] <= allowed]

    def composition(self, row: str) -> Composition:
        """The cell's composition without building the structure."""
        if not row.startswith(MP_PREFIX):
            return Composition(str(self.matbench.column("formula")[row]))
        counts: dict[str, float] = {}
        for site in self._mp[row]["sites"]:
            for sp in site["species"]:
                counts[sp["element"]] = counts.get(sp["element"], 0.0) + float(sp.get("occu", 1.0))
        return Composition(counts)

    def structure(self, row: str) -> Structure:
        if not row.startswith(MP_PREFIX):
            return self.matbench.structure(row)
        if row not in self._structures:
            structure = Structure.from_dict(self._mp[row])
            for prop in list(structure.site_properties):   # MP magmoms etc.: the MLIP sees the bare crystal
                structure.remove_site_property(prop)
            self._structures[row] = structure
        return self._structures[row]


@functools.cache
def load_bundled_compounds() -> BundledCompounds:
    """The shared, process-wide compound set (matbench + Kind A files of ``settings.data_dir()/hulls``)."""
    from core import settings

    return BundledCompounds(load_matbench_dielectric(), settings.data_dir() / "hulls")
