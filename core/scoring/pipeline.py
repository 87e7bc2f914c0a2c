"""Score generated structures: one table row per structure, in input order.

``score`` returns a pandas DataFrame; ``score_iter`` yields ``(index, row)`` as rows finish so the app
can fill a table live. Per chunk of ``batch_size`` structures the pipeline

1. checks each structure (``core.scoring.inputs.input_problem``: finite cell, not empty, not huge, no
   overlapping atoms, ordered) and
   computes its formula, space group (``core.symmetry``, symprec 0.1 Å), structure and composition
   validity;
2. computes MLIP energies in one batched call;
3. optionally relaxes each structure (FIRE + FrechetCellFilter, fmax 0.1 eV/Å, ≤ 500 steps; the chunk's structures
   together with ``relax_many``) and records whether the relaxed structure still matches the generated one and the
   RMS displacement;
4. places every energy on the reference convex hull (grouped by chemical system);
5. predicts band gap and ε_elec in batched calls and forms FoM = ε_elec × E_g;
6. marks uniqueness (vs earlier structures of this call) and novelty (vs ``training_set``).

A structure that fails a step keeps an ``error`` message in its row and the others go on. With
``relax=True`` rows finish per chunk of at most ``RELAX_CHUNK``, otherwise per chunk of ``batch_size``; a named hull ("bundled") is then the relaxed
reference (its compounds relaxed the same way, on first use per chemical system, cached). Steps 1-5 may run
in worker processes (``workers``, see ``core.scoring.workers``); step 6 always runs here, in input order.

Columns (``COLUMNS``): ``formula`` (reduced), ``spacegroup`` (number), ``nsites``, ``energy_ev`` (total, eV;
after relaxation when relaxed), ``energy_per_atom`` (eV/atom), ``e_form_per_atom`` and ``e_above_hull``
(eV/atom, see ``core.scoring.hull``), ``hull_reference`` (which reference set), ``hull_elements_only``
(the reference has only elemental phases in this chemical system), ``hull_coverage`` ("full" |
"partial" | "elements-only" | "completed", ``core.scoring.coverage``; outside full/completed E_hull is a
lower bound), ``band_gap_ev`` (MEGNet, PBE fidelity, max(raw, 0)), ``band_gap_raw_ev`` (the model's raw
output, may be slightly negative), ``eps_elec`` (dimensionless), ``eps_elec_std`` (calibrated spread of the ε ensemble), ``fom_ev`` (ε_elec × E_g), ``fom_ev_std`` (its first-order σ from ε), ``struct_valid`` / ``comp_valid``
(of the input, ``core.scoring.metrics``), ``relaxed``, ``relax_steps``, ``relax_converged``,
``match_relaxed`` / ``rmsd_relaxed`` (input vs relaxed structure; RMSD normalised as pymatgen does),
``novel`` (None without a training set) and ``unique`` (of the final structure: relaxed when relaxed),
``flags`` (``core.scoring.sanity`` codes, ``;``-joined, "" when none: error, invalid, unphysical,
below_hull, hull_lower_bound, gap_clipped), ``error`` (None or "stage: reason; ...").
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from pymatgen.core import Structure

from core.errors import InvalidInputError, ScoringError
from core.scoring.batching import isolate_failures
from core.scoring.fom import figure_of_merit
from core.scoring.hull import HullReference, load_hull_reference
from core.scoring.references.store import energy_predictor
from core.scoring.inputs import SCORING_LIMITS, input_problem
from core.scoring.metrics import (
    NoveltyChecker,
    UniquenessTracker,
    composition_validity,
    relaxation_match,
    structure_validity,
)
from core.scoring.mlip import DEFAULT_MLIP
from core.scoring.sanity import row_flags
from core.scoring.device import pick_torch_device
from core.scoring.uncertainty import dielectric_ensemble, fom_uncertainty
from core.scoring.workers import ChunkRunner, spans, useful_workers
from core.symmetry import SYMPREC_A, space_group_number

if TYPE_CHECKING:
    from core.scoring.mlip import MLIP

RELAX_CHUNK = 8
"""Most structures relaxed together (one ``relax_many``) and finished per chunk with ``relax=True``: batched FIRE
relaxed 60 generated crystals 1.8x faster than one structure at a time (``bench/relax.md``; 2.1-2.7x on 16
crystals, 40 steps), while rows still arrive every few relaxations."""

COLUMNS = (
    "formula", "spacegroup", "nsites", "energy_ev", "energy_per_atom", "e_form_per_atom", "e_above_hull",
    "hull_reference", "hull_elements_only", "hull_coverage", "band_gap_ev", "band_gap_raw_ev", "eps_elec", "eps_elec_std", "fom_ev", "fom_ev_std",
    "struct_valid", "comp_valid",
    "relaxed", "relax_steps", "relax_converged", "match_relaxed", "rmsd_relaxed", "novel", "unique", "flags", "error",
)
TEXT_COLUMNS = ("formula", "hull_reference", "hull_coverage", "flags", "error")


def _message(stage: str, exc: BaseException) -> str:
    return f"{stage}: {exc}" if str(exc) else f"{stage}: {type(exc).__name__}"


class _Row:
    """One structure on its way through the pipeline."""

    def __init__(self, item: Any) -> None:
        self.values: dict[str, Any] = dict.fromkeys(COLUMNS)
        self.values["relaxed"] = False
        self.errors: list[str] = []
        self.input: Structure | None = item if isinstance(item, Structure) else None
        self.structure: Structure | None = None  # what the models see (relaxed if relaxed); None = skip
        if isinstance(item, BaseException):
            self.errors.append(str(item) or type(item).__name__)
            return
        problem = input_problem(item)
        if self.input is not None:
            composition = self.input.composition
            self.values["formula"] = composition.reduced_formula
            self.values["nsites"] = len(self.input)
            self.values["comp_valid"] = composition_validity(composition)
            if problem is None:  # input_problem holds every condition of structure validity
                self.values["struct_valid"] = True
            elif 0 < len(self.input) <= SCORING_LIMITS.max_atoms and self.input.is_ordered:  # the neighbour list needs one species a site
                self.values["struct_valid"] = structure_validity(self.input)
        if problem is not None:
            self.errors.append(problem)
            return
        self.values["spacegroup"] = space_group_number(item, SYMPREC_A)
        self.structure = item

    @property
    def alive(self) -> bool:
        return self.structure is not None

    def fail(self, stage: str, exc: BaseException) -> None:
        self.errors.append(_message(stage, exc))
        self.structure = None

    def finish(self) -> dict[str, Any]:
        self.values["error"] = "; ".join(self.errors) if self.errors else None
        self.values["flags"] = ";".join(row_flags(self.values))
        return dict(self.values)

    def packed(self) -> tuple[dict[str, Any], list[str], bool, Structure | None]:
        """What a worker process sends back: values, errors, alive, and the structure only when relaxed
        (otherwise it is the input, which the parent holds)."""
        relaxed = self.structure if self.alive and self.structure is not self.input else None
        return self.values, self.errors, self.alive, relaxed

    @classmethod
    def unpacked(cls, item: Any, packed: tuple[dict[str, Any], list[str], bool, Structure | None]) -> _Row:
        row = cls.__new__(cls)
        row.values, row.errors, alive, relaxed = packed
        row.input = item if isinstance(item, Structure) else None
        row.structure = (relaxed if relaxed is not None else row.input) if alive else None
        return row


def load_property_models(device: str | None = None) -> tuple[Any, Any]:
    """The band-gap model (MEGNet, PBE fidelity) and the dielectric model, loaded once per process."""
    from core.scoring.backends.bandgap import load_bandgap_model
    from core.scoring.dielectric import load_dielectric_model

    return load_bandgap_model(device=device), load_dielectric_model(device=device)


class _Scorer:
    """Models and reference sets loaded once for a scoring run."""

    def __init__(self, mlip: str | MLIP | None, relax: bool, hull: str | HullReference | None, properties: bool,
                 device: str | None, training_set: Sequence[Structure] | NoveltyChecker | None) -> None:
        from core.scoring.mlip import load_mlip

        self.mlip = load_mlip(mlip, device=device) if isinstance(mlip, str) else mlip
        self.relax = relax
        no_hull = hull is None or (isinstance(hull, str) and hull.lower() == "none")
        if self.mlip is None and (relax or not no_hull):
            raise InvalidInputError("scoring without an MLIP (mlip=None) computes no energy: it cannot relax "
                                    "or place structures on a hull (pass hull=None, relax=False)")
        if no_hull:
            self.hull: HullReference | None = None
        else:
            # relaxed candidates meet references relaxed the same way (same MLIP, FIRE + FrechetCellFilter)
            self.hull = hull if isinstance(hull, HullReference) else load_hull_reference(hull, self.mlip, relaxed=relax)
        self.gap_model, self.eps_model = load_property_models(device) if properties else (None, None)
        self.novelty = None
        if training_set is not None:
            self.novelty = training_set if isinstance(training_set, NoveltyChecker) else NoveltyChecker(training_set)
        self.uniqueness = UniquenessTracker()
        self._energies = energy_predictor(self.mlip) if self.mlip is not None else None

    @staticmethod
    def _batched(rows: list[_Row], stage: str, predict: Callable[[list[Structure]], list[Any]]) -> list[tuple[_Row, Any]]:
        """Run ``predict`` on the live rows; failing rows get the error and drop out."""
        alive = [row for row in rows if row.alive]
        results = isolate_failures(predict, [row.structure for row in alive])
        out = []
        for row, result in zip(alive, results):
            if isinstance(result, BaseException):
                row.fail(stage, result)
            else:
                out.append((row, result))
        return out

    def _properties(self, rows: list[_Row]) -> None:
        """Band gap, ε_elec, FoM; a failure here leaves energy and hull in place."""
        structures = [(row, row.structure) for row in rows if row.alive]
        for column, model in (("band_gap_ev", self.gap_model), ("eps_elec", self.eps_model)):
            if model is None or not structures:
                continue
            try:
                values = list(self._predict(column, model, [s for _, s in structures]))
            except Exception as exc:  # noqa: BLE001
                values = [exc] * len(structures)
            for (row, _), value in zip(structures, values):
                if isinstance(value, BaseException):
                    row.errors.append(_message(column.replace("_ev", "").replace("_", " "), value))
                elif isinstance(value, tuple):              # ε from an ensemble: (mean, σ)
                    row.values[column], row.values[f"{column}_std"] = value
                elif value is not None and math.isfinite(float(value)):
                    row.values[column] = float(value)
                    if column == "band_gap_ev":   # a gap is >= 0: keep the model's raw output, show max(raw, 0)
                        row.values["band_gap_raw_ev"] = float(value)
                        row.values[column] = max(float(value), 0.0)
        for row, _ in structures:
            eps, gap = row.values["eps_elec"], row.values["band_gap_ev"]
            fom = figure_of_merit(eps, gap)
            row.values["fom_ev"] = fom if math.isfinite(fom) else None
            if row.values["fom_ev"] is not None and row.values.get("eps_elec_std") is not None:
                row.values["fom_ev_std"] = float(fom_uncertainty(eps, row.values["eps_elec_std"], gap)[1])

    @staticmethod
    def _predict(column: str, model: Any, structures: list[Structure]) -> list[Any]:
        """The model's values; for an ε model that is an ensemble of boosters, (ε, calibrated σ) per
        structure from ``core.scoring.uncertainty.dielectric_ensemble`` (one descriptor pass)."""
        if column != "eps_elec" or not hasattr(model, "boosters"):
            return list(model.predict(structures))
        ensemble = dielectric_ensemble(structures, model)
        return [ScoringError(error) if error is not None else (float(mean), float(std))
                for mean, std, error in ensemble[["eps_elec_mean", "eps_elec_std", "eps_elec_error"]].itertuples(index=False)]

    def loaded(self) -> tuple:
        """What stages 1-4 depend on: worker processes forked with these serve any scorer holding the same."""
        return self.mlip, self.hull, self.gap_model, self.eps_model, self.relax

    def measure_packed(self, items: Sequence[Any]) -> list[tuple]:
        """``measure_chunk`` as a worker process returns it (``_Row.packed``)."""
        return [row.packed() for row in self.measure_chunk(items)]

    def measure_chunk(self, items: Sequence[Any]) -> list[_Row]:
        """Stages 1-4 (checks, energies, relaxation, hull, properties): per structure, in any process."""
        rows = [_Row(item) for item in items]
        # 1. static energies (also screens out structures a model cannot handle before relaxing them);
        #    energy only where the MLIP allows it: no force/stress backward pass
        for row, result in self._batched(rows, "energy", self._energies) if self._energies is not None else ():
            row.values["energy_ev"] = float(result.energy_ev)
            row.values["energy_per_atom"] = float(result.energy_per_atom)
        # 2. relaxation: the chunk's structures together (relax_many: each its own FIRE state, cell filter and
        #    convergence, the model calls batched); a structure that fails fails alone
        if self.relax:
            from core.scoring import relax as relax_module

            alive = [row for row in rows if row.alive]
            try:
                relaxed = relax_module.relax_many([row.structure for row in alive], self.mlip)
            except Exception as exc:  # noqa: BLE001 - it isolates failures itself; this is a last resort
                relaxed = [exc] * len(alive)
            for row, result in zip(alive, relaxed):
                if isinstance(result, BaseException):
                    row.fail("relax", result)
                    continue
                matched, rmsd = relaxation_match(row.structure, result.structure)
                row.values.update(relaxed=True, relax_steps=int(result.steps), relax_converged=bool(result.converged),
                                  match_relaxed=matched, rmsd_relaxed=rmsd, energy_ev=float(result.energy_ev),
                                  energy_per_atom=float(result.energy_per_atom))
                row.structure = result.structure
        # 3. convex hull
        alive = [row for row in rows if row.alive]
        if self.hull is not None and alive:
            results = self.hull.e_above_hull_many([r.structure for r in alive], [r.values["energy_ev"] for r in alive], self.mlip)
            for row, result in zip(alive, results):
                if isinstance(result, BaseException):
                    row.errors.append(_message("hull", result))
                else:
                    row.values.update(e_above_hull=result.e_above_hull, e_form_per_atom=result.e_form_per_atom,
                                      hull_reference=result.reference, hull_elements_only=result.elements_only,
                                      hull_coverage=result.coverage)
        # 4. properties on the final structures
        self._properties(rows)
        return rows

    def judge(self, rows: list[_Row]) -> list[dict[str, Any]]:
        """Stage 5, in input order in this process: uniqueness (against every earlier structure of the
        call) and novelty of the final structures; returns the finished rows."""
        for row in rows:
            final = row.structure if row.alive else (row.input if row.values["struct_valid"] is True else None)
            if final is None:
                continue
            row.values["unique"] = self.uniqueness.check_and_add(final)
            if self.novelty is not None:
                row.values["novel"] = self.novelty.is_novel(final)
        return [row.finish() for row in rows]


def score_iter(structures: Sequence[Structure], *, mlip: str | MLIP | None = DEFAULT_MLIP, relax: bool = False,
               hull: str | HullReference | None = "bundled", properties: bool = True, device: str | None = None,
               training_set: Sequence[Structure] | NoveltyChecker | None = None,
               progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
               batch_size: int = 32, workers: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(index, row)`` for each structure as its chunk finishes (see ``score`` for arguments).

    Models load when iteration starts. ``should_stop()`` is checked before each chunk; when it
    returns True the iteration ends after the rows already yielded.
    """
    structures = list(structures)
    total = len(structures)
    scorer = _Scorer(mlip, relax, hull, properties, device, training_set)
    size = max(1, int(batch_size))
    if relax:   # a relaxation costs seconds: chunks of <= RELAX_CHUNK, cut smaller so that every worker gets one
        size = max(1, min(size, RELAX_CHUNK, total // max(1, int(workers))))
    workers = useful_workers(total, size, workers) if pick_torch_device(device) == "cpu" else 1  # one process per GPU
    chunks = spans(total, size, workers)
    with (ChunkRunner(scorer.measure_packed, workers, len(chunks), keep=scorer.loaded()) as runner,
          contextlib.closing(runner.map([structures[start:stop] for start, stop in chunks])) as measured):
        for start, stop in chunks:
            if should_stop is not None and should_stop():
                return
            rows = scorer.judge([_Row.unpacked(item, packed) for item, packed in zip(structures[start:stop], next(measured))])
            for offset, row in enumerate(rows):
                yield start + offset, row
            if progress is not None:
                progress(stop, total)


def score(structures: Sequence[Structure], *, mlip: str | MLIP | None = DEFAULT_MLIP, relax: bool = False,
          hull: str | HullReference | None = "bundled", properties: bool = True, device: str | None = None,
          training_set: Sequence[Structure] | NoveltyChecker | None = None,
          progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
          batch_size: int = 32, workers: int = 1) -> pd.DataFrame:
    """Score structures into a table, one row per input structure in input order.

    Args:
        structures: pymatgen Structures (an Exception in a slot, e.g. from a file reader, becomes an error row).
        mlip: registry name (``core.scoring.mlip.MLIP_NAMES``) or a loaded MLIP; None computes no energy
            (properties only, e.g. a FoM reward; then ``hull`` must be None and ``relax`` False).
        relax: relax each structure with the MLIP before the hull and properties.
        hull: "bundled", "mp-api", a path to an entries file, a HullReference, or None / "none" to skip.
        properties: predict band gap (eV), ε_elec and FoM (eV).
        device: torch device for every model ("cpu", "cuda"); None picks automatically.
        training_set: structures (or a prepared NoveltyChecker) to judge novelty against; None leaves ``novel`` empty.
        progress: called as ``progress(done, total)`` after each chunk.
        should_stop: polled before each chunk; True ends scoring and returns the rows done so far.
        batch_size: structures per batched model call.
        workers: processes scoring chunks side by side on a CPU (``core.scoring.workers``; 1: this
            process only; ``default_workers(device)`` gives one per core). Ignored on a GPU. The
            processes stay after the call and serve the next call with the same models;
            ``close_workers()`` stops them.

    Returns:
        DataFrame with the columns of ``COLUMNS`` (units in the names), indexed by input position;
        ``df.attrs["stopped"]`` is True when ``should_stop`` ended the run early.
    """
    structures = list(structures)
    rows = dict(score_iter(structures, mlip=mlip, relax=relax, hull=hull, properties=properties, device=device,
                           training_set=training_set, progress=progress, should_stop=should_stop, batch_size=batch_size,
                           workers=workers))
    index = sorted(rows)
    frame = pd.DataFrame([rows[i] for i in index], index=index, columns=list(COLUMNS))
    for column in TEXT_COLUMNS:  # keep None (not NaN) for "no value", whatever pandas' string dtype does
        frame[column] = pd.Series([rows[i][column] for i in index], index=index, dtype=object)
    frame.attrs["stopped"] = len(rows) < len(structures)
    return frame
