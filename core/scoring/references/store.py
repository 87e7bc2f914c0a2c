"""MLIP energies of the bundled reference phases, computed on demand and cached on disk.

One JSON file per (reference version, MLIP) under ``core.settings.cache_dir()/hull/``:
``{"compounds": {row: {"energy_ev": E} | {"error": msg}}, "elements": {symbol: [phase, ...]}}``
where each elemental phase is ``{"label", "energy_per_atom", "steps", "converged"}`` or
``{"label", "error"}``. Energies are raw MLIP energies (eV, eV/atom) without corrections, so one
cache serves every correction scheme. Writes merge with what another process may have stored
meanwhile and replace the file atomically.
"""
from __future__ import annotations

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

ELEMENT_FMAX = 0.05   # eV/Å, tighter than the query relaxation: references should sit at their minimum
ELEMENT_STEPS = 300
PREDICT_CHUNK = 32


def mlip_key(mlip: MLIP) -> str:
    """File-name-safe identity of an MLIP (registry name + label, e.g. ``m3gnet__M3GNet-MP-2021.2.8-PES``)."""
    raw = f"{mlip.name}__{getattr(mlip, 'label', mlip.name)}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _relax_candidate(candidate: ElementCandidate, mlip: MLIP) -> dict[str, Any]:
    from core.scoring.relax import relax

    try:
        result = relax(candidate.structure, mlip, fmax=ELEMENT_FMAX, steps=ELEMENT_STEPS, relax_cell=candidate.relax_cell)
    except Exception as exc:  # noqa: BLE001 - one failed phase must not stop the others
        return {"label": candidate.label, "error": _message(exc)}
    return {"label": candidate.label, "energy_per_atom": float(result.energy_per_atom), "steps": int(result.steps),
            "converged": bool(result.converged)}


class ReferenceEnergies:
    """Cached MLIP energies of reference compounds (static) and elemental phases (relaxed)."""

    def __init__(self, mlip: MLIP, version: str, cache_root: Path | None = None) -> None:
        self.mlip = mlip
        root = cache_root or settings.cache_dir() / "hull"
        self.path = root / version / f"{mlip_key(mlip)}.json"
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, Any]] = self._read()

    # ---- disk ----
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = {}
        return {"compounds": dict(data.get("compounds", {})), "elements": dict(data.get("elements", {}))}

    def _write(self) -> None:
        on_disk = self._read()
        for section in ("compounds", "elements"):
            on_disk[section].update(self._data[section])
        self._data = on_disk
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"mlip": getattr(self.mlip, "label", self.mlip.name), **self._data}, fh)
        os.replace(tmp, self.path)

    # ---- compounds: static energies of reference structures ----
    def compound_energies(self, rows: Iterable[str], structure_of: Callable[[str], Structure]) -> dict[str, float | str]:
        """Total MLIP energy (eV) of each row's structure, or an error message; computes the missing ones."""
        rows = list(rows)
        with self._lock:
            missing = [row for row in rows if row not in self._data["compounds"]]
            if missing:
                log.info("computing %d reference energies with %s", len(missing), mlip_key(self.mlip))
                for start in range(0, len(missing), PREDICT_CHUNK):
                    chunk = missing[start:start + PREDICT_CHUNK]
                    for row, result in zip(chunk, self._predict([structure_of(row) for row in chunk])):
                        self._data["compounds"][row] = (
                            {"error": _message(result)} if isinstance(result, BaseException)
                            else {"energy_ev": float(result.energy_ev)}
                        )
                self._write()
            stored = self._data["compounds"]
            return {row: stored[row].get("energy_ev", stored[row].get("error", "unknown error")) for row in rows}

    def _predict(self, structures: list[Structure]) -> list[Any]:
        try:
            return list(self.mlip.predict(structures))
        except Exception:  # noqa: BLE001 - fall back to one at a time so one structure cannot poison the chunk
            results: list[Any] = []
            for structure in structures:
                try:
                    results.extend(self.mlip.predict([structure]))
                except Exception as exc:  # noqa: BLE001
                    results.append(exc)
            return results

    # ---- elements: relaxed elemental phases ----
    def element_phases(self, symbol: str) -> list[dict[str, Any]]:
        """Relaxed candidate phases of ``symbol`` (see ``references.elements``), computed once."""
        with self._lock:
            if symbol not in self._data["elements"]:
                log.info("relaxing elemental reference phases of %s with %s", symbol, mlip_key(self.mlip))
                self._data["elements"][symbol] = [_relax_candidate(c, self.mlip) for c in element_candidates(symbol)]
                self._write()
            return list(self._data["elements"][symbol])
