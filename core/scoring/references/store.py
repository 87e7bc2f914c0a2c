"""MLIP energies of the bundled reference phases, computed on demand and cached on disk.

One JSON file per MLIP under ``core.settings.cache_dir()/hull/bundled/``, with one section per
recipe version so a change of recipe recomputes only what it changes:
``{"compounds-<COMPOUND_RECIPE>": {row: {"energy_ev": E} | {"error": msg}},
"compounds-relaxed-<RELAXED_RECIPE>": {row: {"energy_ev": E, "steps": n, "converged": bool} | {"error": msg}},
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
RELAXED_RECIPE = "r1"   # relaxed like a candidate: relax_many (FIRE + FrechetCellFilter), relax.DEFAULT_FMAX/STEPS
RELAX_CHUNK = 16        # compounds relaxed together, then written: an interrupted precompute resumes there
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
        self.sections = {"compounds": f"compounds-{COMPOUND_RECIPE}", "elements": f"elements-{ELEMENT_RECIPE}",
                         "relaxed": f"compounds-relaxed-{RELAXED_RECIPE}"}
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
    def compound_energies(self, rows: Iterable[str], structure_of: Callable[[str], Structure],
                          relaxed: bool = False, progress: Callable[[int, int], None] | None = None) -> dict[str, float | str]:
        """Total MLIP energy (eV) of each row's structure, or an error message; computes the missing ones.

        ``relaxed``: the energy after relaxing the structure as candidates are relaxed (``relax_many``, FIRE +
        FrechetCellFilter, ``relax.DEFAULT_FMAX`` eV/Å, ``relax.DEFAULT_STEPS`` steps), so that relaxed
        candidates and references stand on the same footing; otherwise the static energy at the stored geometry.
        Relaxed energies are written every ``RELAX_CHUNK`` compounds, so an interrupted run resumes.
        """
        rows = list(rows)
        kind = "relaxed" if relaxed else "compounds"
        with self._lock:
            missing = [row for row in rows if row not in self._section(kind)]
            if missing:
                log.info("computing %d %s reference energies with %s", len(missing), kind, mlip_key(self.mlip))
                chunk_size = RELAX_CHUNK if relaxed else PREDICT_CHUNK
                for start in range(0, len(missing), chunk_size):
                    chunk = missing[start:start + chunk_size]
                    structures = [structure_of(row) for row in chunk]
                    results = self._relax(structures) if relaxed else self._predict(structures)
                    for row, result in zip(chunk, results):
                        self._section(kind)[row] = self._stored(result, relaxed)
                    if relaxed:
                        self._write()
                    if progress is not None:
                        progress(min(start + chunk_size, len(missing)), len(missing))
                self._write()
            stored = self._section(kind)
            return {row: stored[row].get("energy_ev", stored[row].get("error", "unknown error")) for row in rows}

    @staticmethod
    def _stored(result: Any, relaxed: bool) -> dict[str, Any]:
        if isinstance(result, BaseException):
            return {"error": _message(result)}
        if relaxed:
            return {"energy_ev": float(result.energy_ev), "steps": int(result.steps), "converged": bool(result.converged)}
        return {"energy_ev": float(result.energy_ev)}

    def _relax(self, structures: list[Structure]) -> list[Any]:
        from core.scoring.relax import relax_many

        return relax_many(structures, self.mlip)

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


def prepare(mlip: MLIP, progress: Callable[[str], None] = print, relaxed: bool = False,
            systems: Iterable[Iterable[str]] | None = None) -> Path:
    """Compute bundled reference energies for ``mlip`` and write them where the project ships them
    (``shipped_path``), so that the first E_hull of a new chemical system costs nothing.

    Static energies of every compound (matbench_dielectric + the MP structures of ``shared/data/hulls``,
    ``references.bundled``) and the elemental phases of every element they contain take about 20 min on 2
    CPU cores. ``relaxed`` computes the relaxed energies instead (hours for all ~6,000 compounds on 2
    cores); ``systems`` limits the work to the compounds of these chemical systems (and their subsystems).
    Work already in the user's cache or the shipped file is not repeated, and relaxed energies are written
    every ``RELAX_CHUNK`` compounds, so an interrupted run resumes where it stopped.
    """
    from core.scoring.references.bundled import load_bundled_compounds

    table = load_bundled_compounds()
    if systems is None:
        rows = list(table.rows)
    else:
        wanted = [frozenset(system) for system in systems]
        rows = [row for row in table.rows if any(table.element_sets[row] <= system for system in wanted)]
    store = ReferenceEnergies(mlip)
    kind = "relaxed" if relaxed else "compounds"
    for start in range(0, len(rows), 500):
        store.compound_energies(rows[start:start + 500], table.structure, relaxed=relaxed)
        progress(f"{kind} {min(start + 500, len(rows))}/{len(rows)}")
    elements = sorted(set().union(*(table.element_sets[row] for row in rows))) if rows else []
    for symbol in elements:
        store.element_phases(symbol)
    progress(f"elements {len(elements)}")
    out = shipped_path(mlip)
    out.parent.mkdir(parents=True, exist_ok=True)
    shipped = _shipped(mlip)
    data = {"mlip": {"label": mlip.label}}
    for name in sorted({*shipped, *(store.sections[k] for k in ("compounds", "elements", "relaxed"))}):
        merged = {**shipped.get(name, {}), **store._data.get(name, {})}
        if merged:
            data[name] = dict(sorted(merged.items()))
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return out


if __name__ == "__main__":  # python -m core.scoring.references.store [--relaxed] [--systems Li-Co-Ni-O,...] m3gnet
    import argparse

    from core.scoring.mlip import load_mlip

    parser = argparse.ArgumentParser(description="precompute the bundled hull reference energies of MLIPs")
    parser.add_argument("mlips", nargs="+")
    parser.add_argument("--relaxed", action="store_true", help="relaxed compound energies (same footing as relaxed candidates)")
    parser.add_argument("--systems", default=None, help="comma-separated chemical systems, e.g. Li-Co-Ni-O,Na-Fe-P-O")
    args = parser.parse_args()
    chosen = [s.split("-") for s in args.systems.split(",")] if args.systems else None
    for name in args.mlips:
        print("wrote", prepare(load_mlip(name), relaxed=args.relaxed, systems=chosen))
