"""MLIP energies of the bundled reference phases, computed on demand and cached on disk.

One JSON file per MLIP under ``core.settings.cache_dir()/hull/bundled/``, with one section per
recipe version so a change of recipe recomputes only what it changes:
``{"compounds-<COMPOUND_RECIPE>": {row: {"energy_ev": E} | {"error": msg}},
"elements-<ELEMENT_RECIPE>": {symbol: [phase, ...]}}`` where each elemental phase is
``{"label", "energy_per_atom", "steps", "converged"}`` or ``{"label", "error"}``. Energies are raw
MLIP energies (eV, eV/atom) without corrections, so one cache serves every correction scheme. Writes
merge with what another process may have stored meanwhile and replace the file atomically.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymatgen.core import Structure

from core import settings
from core.scoring.references.elements import ElementCandidate, element_candidates

if TYPE_CHECKING:
    from core.scoring.mlip import MLIP

log = logging.getLogger(__name__)

COMPOUND_RECIPE = "v1"  # static MLIP energy at the matbench_dielectric (MP-relaxed) geometry
ELEMENT_RECIPE = "v3"   # references.elements candidates, relaxed; cells compressed into the MLIP's cutoff
ELEMENT_FMAX = 0.05   # eV/Å, tighter than the query relaxation: references should sit at their minimum
ELEMENT_STEPS = 300
PREDICT_CHUNK = 32
CUTOFF_FILL = 0.9     # an element whose nearest neighbour is beyond the cutoff starts at 0.9 × cutoff


def mlip_key(mlip: MLIP) -> str:
    """File-name-safe identity of an MLIP (registry name + label, e.g. ``m3gnet__M3GNet-MP-2021.2.8-PES``)."""
    raw = f"{mlip.name}__{mlip.label}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def energy_predictor(mlip: MLIP) -> Callable[[list[Structure]], list[Any]]:
    """``mlip.predict`` without forces and stress (no backward pass)."""
    return functools.partial(mlip.predict, forces=False)


def _within_cutoff(structure: Structure, mlip: MLIP) -> Structure:
    """The structure, uniformly compressed if its nearest neighbours lie beyond the MLIP's cutoff
    (bcc Cs from ASE has them at 5.24 Å, beyond M3GNet's 5 Å, and would be refused as isolated atoms);
    the relaxation then finds the MLIP's own volume."""
    from core.scoring.metrics import min_interatomic_distance

    cutoff = mlip.cutoff_a
    nearest = min_interatomic_distance(structure)
    if not cutoff or not nearest > CUTOFF_FILL * cutoff:
        return structure
    scaled = structure.copy()
    scaled.scale_lattice(structure.volume * (CUTOFF_FILL * cutoff / nearest) ** 3)
    return scaled


def _relax_candidate(candidate: ElementCandidate, mlip: MLIP) -> dict[str, Any]:
    from core.scoring.relax import relax

    try:
        start = _within_cutoff(candidate.structure, mlip)
        result = relax(start, mlip, fmax=ELEMENT_FMAX, steps=ELEMENT_STEPS, relax_cell=candidate.relax_cell)
    except Exception as exc:  # noqa: BLE001 - one failed phase must not stop the others
        return {"label": candidate.label, "error": _message(exc)}
    return {"label": candidate.label, "energy_per_atom": float(result.energy_per_atom), "steps": int(result.steps),
            "converged": bool(result.converged)}


def shipped_path(mlip: MLIP) -> Path:
    """Where the project ships precomputed reference energies for ``mlip`` (``prepare`` writes them)."""
    return settings.checkpoints_dir() / "hull-references" / f"{mlip_key(mlip)}.json"


def _shipped(mlip: MLIP) -> dict[str, dict[str, Any]]:
    """Sections of the shipped file for ``mlip`` (empty when there is none); sections of another recipe
    version are ignored by ``ReferenceEnergies``, so a stale file only costs recomputation."""
    try:
        with open(shipped_path(mlip)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {key: dict(value) for key, value in data.items() if isinstance(value, dict) and key != "mlip"}


class ReferenceEnergies:
    """Cached MLIP energies of reference compounds (static) and elemental phases (relaxed)."""

    def __init__(self, mlip: MLIP, cache_root: Path | None = None) -> None:
        self.mlip = mlip
        root = cache_root or settings.cache_dir() / "hull" / "bundled"
        self.path = root / f"{mlip_key(mlip)}.json"
        self.sections = {"compounds": f"compounds-{COMPOUND_RECIPE}", "elements": f"elements-{ELEMENT_RECIPE}"}
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, Any]] = self._read()
        for name, section in _shipped(mlip).items():      # computed here already, shipped with the project
            self._data[name] = {**section, **self._data.get(name, {})}

    # ---- disk ----
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = {}
        return {key: dict(value) for key, value in data.items() if isinstance(value, dict)}

    def _section(self, kind: str) -> dict[str, Any]:
        return self._data.setdefault(self.sections[kind], {})

    def _write(self) -> None:
        on_disk = self._read()
        for name, section in self._data.items():
            on_disk.setdefault(name, {}).update(section)
        self._data = on_disk
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"mlip": {"label": self.mlip.label}, **self._data}, fh)
        os.replace(tmp, self.path)

    # ---- compounds: static energies of reference structures ----
    def compound_energies(self, rows: Iterable[str], structure_of: Callable[[str], Structure]) -> dict[str, float | str]:
        """Total MLIP energy (eV) of each row's structure, or an error message; computes the missing ones."""
        rows = list(rows)
        with self._lock:
            missing = [row for row in rows if row not in self._section("compounds")]
            if missing:
                log.info("computing %d reference energies with %s", len(missing), mlip_key(self.mlip))
                for start in range(0, len(missing), PREDICT_CHUNK):
                    chunk = missing[start:start + PREDICT_CHUNK]
                    for row, result in zip(chunk, self._predict([structure_of(row) for row in chunk])):
                        self._section("compounds")[row] = (
                            {"error": _message(result)} if isinstance(result, BaseException)
                            else {"energy_ev": float(result.energy_ev)}
                        )
                self._write()
            stored = self._section("compounds")
            return {row: stored[row].get("energy_ev", stored[row].get("error", "unknown error")) for row in rows}

    def _predict(self, structures: list[Structure]) -> list[Any]:
        predict = energy_predictor(self.mlip)
        try:
            return list(predict(structures))
        except Exception:  # noqa: BLE001 - fall back to one at a time so one structure cannot poison the chunk
            results: list[Any] = []
            for structure in structures:
                try:
                    results.extend(predict([structure]))
                except Exception as exc:  # noqa: BLE001
                    results.append(exc)
            return results

    # ---- elements: relaxed elemental phases ----
    def element_phases(self, symbol: str) -> list[dict[str, Any]]:
        """Relaxed candidate phases of ``symbol`` (see ``references.elements``), computed once."""
        with self._lock:
            if symbol not in self._section("elements"):
                log.info("relaxing elemental reference phases of %s with %s", symbol, mlip_key(self.mlip))
                self._section("elements")[symbol] = [_relax_candidate(c, self.mlip) for c in element_candidates(symbol)]
                self._write()
            return list(self._section("elements")[symbol])


def prepare(mlip: MLIP, progress: Callable[[str], None] = print) -> Path:
    """Compute every bundled reference energy for ``mlip`` (all matbench_dielectric compounds, the elemental
    phases of every element they contain) and write them where the project ships them (``shipped_path``),
    so that the first E_hull of a new chemical system costs nothing. About 20 min on 2 CPU cores."""
    from core.scoring.references.matbench import load_matbench_dielectric

    table = load_matbench_dielectric()
    store = ReferenceEnergies(mlip)
    for start in range(0, len(table.rows), 500):
        store.compound_energies(table.rows[start:start + 500], table.structure)
        progress(f"compounds {min(start + 500, len(table.rows))}/{len(table.rows)}")
    elements = sorted(set().union(*table.element_sets.values()))
    for symbol in elements:
        store.element_phases(symbol)
    progress(f"elements {len(elements)}")
    out = shipped_path(mlip)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"mlip": {"label": mlip.label},
            **{store.sections[kind]: dict(sorted(store._section(kind).items())) for kind in ("compounds", "elements")}}
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return out


if __name__ == "__main__":  # python -m core.scoring.references.store sevennet m3gnet
    import sys

    from core.scoring.mlip import load_mlip

    for name in sys.argv[1:]:
        print("wrote", prepare(load_mlip(name)))
