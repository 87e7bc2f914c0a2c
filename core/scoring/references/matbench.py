"""The 4,764 Materials Project structures of matbench_dielectric that ship inside the crystal-toolkit wheel.

They serve as the bundled reference phases for the convex hull (``core.scoring.hull``) and as the
training data of the dielectric model. The file is a pandas-style dict of columns
(``structure``, ``n``, ``spg_num``, ``formula``, ...) keyed by row-index strings ("0" ... "4763").
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Structure

from core.errors import MissingResourceError

PACKAGE = "crystal_toolkit"
RESOURCE = ("apps", "examples", "matbench_dielectric.json.gz")


def matbench_dielectric_path() -> Path:
    """Path of ``matbench_dielectric.json.gz`` inside the installed crystal-toolkit package."""
    # find_spec locates the package without importing it (importing crystal_toolkit pulls in Dash: ~8 s)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingResourceError(
            "crystal-toolkit is not installed, so the bundled matbench_dielectric structures are missing. "
            "Install it with `pip install crystal-toolkit` (pinned in requirements.txt) or choose another hull "
            "reference (an entries file or mp-api)."
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*RESOURCE)
    if not path.is_file():
        raise MissingResourceError(
            f"matbench_dielectric.json.gz not found at {path}: this crystal-toolkit build does not ship its examples. "
            "Reinstall crystal-toolkit from the wheel pinned in requirements.txt."
        )
    return path


class MatbenchDielectric:
    """Lazy access to the matbench_dielectric rows: element sets up front, structures parsed on demand."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or matbench_dielectric_path()
        with gzip.open(self.path, "rt") as fh:
            self._columns: dict[str, dict[str, object]] = json.load(fh)
        self.rows: list[str] = sorted(self._columns["structure"], key=int)
        self.element_sets: dict[str, frozenset[str]] = {
            row: frozenset(el.symbol for el in Composition(str(self._columns["formula"][row])).elements)
            for row in self.rows
        }
        self._structures: dict[str, Structure] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def rows_within(self, elements: frozenset[str] | set[str]) -> list[str]:
        """Rows whose elements are all in ``elements`` (the reference phases of that chemical system)."""
        allowed = frozenset(elements)
        return [row for row in self.rows if self.element_sets[row] <= allowed]

    def structure(self, row: str) -> Structure:
        if row not in self._structures:
            self._structures[row] = Structure.from_dict(self._columns["structure"][row])
        return self._structures[row]

    def refractive_index(self, row: str) -> float:
        """Refractive index n (dimensionless); ε_elec = n²."""
        return float(self._columns["n"][row])

    def column(self, name: str) -> dict[str, object]:
        return self._columns[name]

    def structures_and_n(self) -> tuple[list[Structure], np.ndarray]:
        """Every structure and its refractive index n, in matbench order (rows '0' … '4763')."""
        return [self.structure(row) for row in self.rows], np.array([self.refractive_index(r) for r in self.rows], float)


@functools.cache
def load_matbench_dielectric() -> MatbenchDielectric:
    """The shared, process-wide instance (parsed once, about 1 s)."""
    return MatbenchDielectric()
