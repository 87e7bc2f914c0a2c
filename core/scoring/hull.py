"""Energy above the convex hull (eV/atom) of a structure whose energy an MLIP computed.

The structure and its MLIP total energy become a pymatgen entry; when the MLIP is MP-compatible
(``mlip.mp_compatible``: trained on Materials Project PBE/PBE+U energies, e.g. M3GNet-MP-2021, CHGNet,
SevenNet-0) the entry gets MP's run parameters (GGA, or GGA+U with MP's U values when O or F is the
most electronegative element and a U element is present) and ``MaterialsProject2020Compatibility``
corrections (anion, GGA/GGA+U mixing). MLIPs on another scale (MatPES PBE) get no correction. The
entry is placed on the ``PhaseDiagram`` of a reference set's phases in its chemical system with
``get_decomp_and_e_above_hull(entry, allow_negative=True)``: a negative value means below the
reference hull.

Reference sets (``load_hull_reference(kind, mlip)``):

``"bundled"`` (default, offline)
    the 4,764 MP structures of matbench_dielectric shipped in crystal-toolkit and the MP entries with
    structures of ``shared/data/hulls`` (Li-Co-Ni-O, Na-Fe-P-O: ``references.bundled``) plus relaxed
    elemental phases (``core.scoring.references.elements``), all computed with the *same* MLIP (compounds:
    static energy at the MP geometry, or with ``relaxed=True`` relaxed exactly as candidates are; elements:
    relaxed), so the hull is self-consistent. Only the phases of the query's chemical system are
    computed, once, and cached on disk. Relaxed candidates (``score(relax=True)``) are placed on the
    relaxed reference: same MLIP, same FIRE + FrechetCellFilter settings on both sides.
an entries file
    Kind A: MP ``ComputedStructureEntry`` JSON (total DFT energies with MP2020 corrections);
    Kind B: slim formation-energy entries (Alexandria ternaries). See ``references.entries_file``.
``"bundled+complete"``
    the bundled reference completed on demand (``core.scoring.completion``): where an expected element
    pair has no reference compound, substituted binaries relaxed with the same MLIP join the hull
    (≤ 40 relaxations per system, cached per MLIP and pair; coverage ``"completed"``).
``"mp-api"``
    ``MPRester.get_entries_in_chemsys`` (GGA/GGA+U), needs ``MP_API_KEY``.

Energy scales: a query and the reference must share one. The bundled reference, and Kind A / mp-api
with an MLIP on MP's scale (``mp_compatible``, or ``energy_scale == "mp2020"`` for models trained on
already-corrected MP energies such as CHGNet, which get no second correction), compare *total*
energies. Otherwise (Kind B, or a MatPES-scale MLIP against DFT entries) both sides are turned into
*formation* energies: the reference's own (from its lowest
elemental entries) and the query's relative to the MLIP's bundled elemental phases. That cancels the
MLIP's elemental offsets; what remains is the MLIP's formation-energy error.

Every result names its reference and says how completely it covers the chemical system
(``coverage``, rule in ``core.scoring.coverage``): ``"full"`` when every element pair of the system that
is expected to form a compound (a binary known offline in matbench_dielectric or on the DFT hulls of
``shared/data/hulls``, or a charge-neutral SMACT binary when one element is a non-metal) is represented
by at least one compound of the reference; ``"partial"`` when such a pair is missing
(``missing_pairs``); ``"elements-only"`` when the reference holds only elemental phases there (E_hull
then equals the formation energy, ``elements_only``); ``"completed"`` after hull completion filled the
missing pairs. Missing competing phases make E_hull too low: outside ``full`` / ``completed`` E_hull is
a **lower bound** (``HullResult.lower_bound``; ``core.scoring.sanity`` flags it ``hull_lower_bound``
and never calls such a row stable).
"""
from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.analysis.structure_analyzer import oxide_type, sulfide_type
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.compatibility import CompatibilityError, MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from core.errors import MissingResourceError, ScoringError
from core.scoring.coverage import JUDGED_COVERAGE, Coverage, classify
from core.scoring.references.entries_file import read_entries_file
from core.scoring.references.store import COMPOUND_RECIPE, ELEMENT_RECIPE, RELAXED_RECIPE, ReferenceEnergies, mlip_key

if TYPE_CHECKING:
    from core.scoring.mlip import MLIP

BUNDLED_SET = "mb+mp1"   # matbench_dielectric + the Kind A MP files (references.bundled); names the compound set
BUNDLED_VERSION = f"bundled-{BUNDLED_SET}-{COMPOUND_RECIPE}.{ELEMENT_RECIPE}"   # and the recipes (references.store)
HULL_KINDS = ("bundled", "bundled+complete", "mp-api", "alexandria")  # besides a path to an entries file (alexandria: references.alexandria)
_PD_CACHE_SIZE = 512


@dataclass(frozen=True)
class HullResult:
    """Where one structure sits relative to a reference convex hull."""

    e_above_hull: float        # eV/atom; 0 on the hull, < 0 below it
    e_form_per_atom: float     # eV/atom, relative to the reference's elemental phases
    reference: str             # name of the reference set, e.g. "bundled-v1.v3/m3gnet"
    elements_only: bool        # the reference holds only elemental phases in this chemical system
    decomposition: str         # hull phases at this composition, atom fractions: "0.6 Fe2O3 + 0.4 Na2O"
    correction_per_atom: float = 0.0  # eV/atom MP2020 correction applied to the query energy
    coverage: str = "full"     # "full" | "partial" | "elements-only" | "completed" (core.scoring.coverage)
    missing_pairs: tuple[str, ...] = ()  # element pairs expected to form compounds that the reference lacks

    @property
    def lower_bound(self) -> bool:
        """E_hull is only a lower bound: the reference does not cover the system (missing competing phases)."""
        return self.coverage not in JUDGED_COVERAGE


# ---------------------------------------------------------------- MP2020 entries


@functools.cache
def mp2020() -> MaterialsProject2020Compatibility:
    """The shared MaterialsProject2020Compatibility (POTCAR check off: MLIP entries have no POTCARs)."""
    return MaterialsProject2020Compatibility(check_potcar=False)


def mp_run_parameters(composition: Composition) -> dict[str, Any]:
    """Run parameters MP would have used for ``composition``: GGA+U with MP's U values (eV) when
    its most electronegative element is O or F and a U element is present, GGA otherwise."""
    # the anion is chosen exactly as MaterialsProject2020Compatibility chooses it
    anion = sorted((el for el in composition.elements if composition[el] > 0), key=lambda el: el.X)[-1].symbol
    u_values = mp2020().u_settings.get(anion, {})
    hubbards = {el.symbol: float(u_values.get(el.symbol, 0.0)) for el in composition.elements}
    if any(hubbards.values()):
        return {"run_type": "GGA+U", "is_hubbard": True, "hubbards": hubbards}
    return {"run_type": "GGA", "is_hubbard": False, "hubbards": None}


@functools.cache
def _mp2020_guess_anions() -> frozenset[str]:
    """Elements with an MP2020 anion correction that depends on their oxidation state (all but O and S)."""
    return frozenset(k for k in mp2020().comp_correction if Element.is_valid_symbol(k)) - {"O", "S"}


@functools.lru_cache(maxsize=8192)
def _oxidation_states(reduced_formula: str) -> dict[str, float]:
    """First oxidation-state guess, as MP2020 computes it (the slow part of the correction; cached)."""
    try:
        guesses = Composition(reduced_formula).oxi_state_guesses(max_sites=-20)
    except ValueError:
        guesses = ()
    return dict((guesses or ({},))[0])


_SULFUR = Element("S")


def sulfur_anion_type(composition: Composition, structure: Structure) -> str:
    """How MP2020 reads the sulphur of ``structure``: ``"sulfide"`` or ``"polysulfide"`` (both get the S
    correction) or ``"sulfate"`` (none). Single elements get no correction whatever this says.

    pymatgen's ``sulfide_type`` calls a sulphur a sulfate when the mean Pauling electronegativity of
    its (up to four) nearest neighbours exceeds sulphur's, otherwise a sulfide or polysulfide, which
    MP2020 corrects alike. Without an element more electronegative than S (O, N, F, Cl, Br, I, ...)
    that mean cannot exceed it, so the answer is "sulfide" without pymatgen's symmetry analysis
    (spglib, 4 ms a structure). Otherwise pymatgen decides; its None (a sulfate) is returned as
    "sulfate", so that MP2020 does not run the analysis a second time.
    """
    if all(el.X <= _SULFUR.X for el in composition.elements):  # NaN (no X) compares False: pymatgen decides
        return "sulfide"
    return sulfide_type(structure) or "sulfate"


def mlip_entry(structure: Structure, energy_ev: float, *, corrected: bool, entry_id: str | None = None) -> ComputedStructureEntry:
    """A ComputedStructureEntry of an MLIP total energy (eV), with MP2020 corrections if ``corrected``.

    The oxide type is classified with pymatgen's default bond-length tolerance (1.1), which
    reproduces the ``oxide_type`` stored in every Materials Project entry of ``shared/data/hulls``
    (the compatibility class's own fallback, 1.05, misreads some peroxides/ozonides).

    Raises:
        ScoringError: non-finite energy, or the corrections reject the entry.
    """
    if not np.isfinite(energy_ev):
        raise ScoringError(f"non-finite energy {energy_ev} for {structure.formula}")
    composition = structure.composition
    if not corrected:
        return ComputedStructureEntry(structure, float(energy_ev), entry_id=entry_id)
    symbols = {el.symbol for el in composition.elements}
    # MP2020 uses the oxidation-state guess only to decide whether these anions are anionic; the guess is
    # slow, so compositions without them skip it (an empty guess changes nothing for them)
    needs_guess = bool(symbols & _mp2020_guess_anions())
    data: dict[str, Any] = {"oxidation_states": _oxidation_states(composition.reduced_formula) if needs_guess else {}}
    if Element("O") in composition:
        data["oxide_type"] = oxide_type(structure)
    if Element("S") in composition:
        data["sulfide_type"] = sulfur_anion_type(composition, structure)
    entry = ComputedStructureEntry(structure, float(energy_ev), parameters=mp_run_parameters(composition),
                                   data=data, entry_id=entry_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "failed to guess oxidation states": handled as MP does
            mp2020().process_entry(entry, on_error="raise")
    except CompatibilityError as exc:
        raise ScoringError(f"MP2020 corrections reject {composition.reduced_formula}: {str(exc)[:200]}") from exc
    return entry


def _decomposition_text(decomposition: dict[Any, float]) -> str:
    parts = sorted(decomposition.items(), key=lambda item: -item[1])
    return " + ".join(f"{fraction:.3g} {entry.composition.reduced_formula}" for entry, fraction in parts)


def _chemsys(structure: Structure) -> frozenset[str]:
    return frozenset(el.symbol for el in structure.composition.elements)


def _is_compound(entry: Any) -> bool:
    return len(entry.composition.elements) > 1


def _elemental_minima(entries: Sequence[Any], elements: frozenset[str]) -> dict[str, float]:
    """Lowest energy per atom (eV/atom) of the unary entries of each element."""
    minima: dict[str, float] = {}
    for entry in entries:
        if len(entry.composition.elements) == 1:
            symbol = entry.composition.elements[0].symbol
            minima[symbol] = min(minima.get(symbol, np.inf), entry.energy_per_atom)
    return {el: minima[el] for el in elements if el in minima}


def _to_formation(entries: Sequence[Any], minima: dict[str, float]) -> list[PDEntry]:
    """Entries re-expressed as formation energies (eV per cell) relative to ``minima``."""
    out = []
    for entry in entries:
        composition = entry.composition
        reference = sum(amount * minima[el.symbol] for el, amount in composition.items())
        out.append(PDEntry(composition, entry.energy - reference, name=getattr(entry, "entry_id", None) or str(entry.name)))
    return out


# ---------------------------------------------------------------- reference sets


class HullReference:
    """A set of reference phases that places structures relative to their convex hull.

    Subclasses provide the phases of a chemical system on the *total* scale
    (``_total_entries``) and/or the *formation* scale (``_formation_entries``) and say which
    scale an MLIP is compared on (``_total_scale``). Phase diagrams are cached per chemical system.
    """

    def __init__(self, name: str, description: str, mlip: MLIP | None = None) -> None:
        self.name = name
        self.description = description
        self.mlip = mlip
        self._diagrams: OrderedDict[tuple[str, bool, frozenset[str]], tuple[PhaseDiagram, bool]] = OrderedDict()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ---- hooks ----
    def covered_elements(self) -> frozenset[str] | None:
        """Elements the reference can hold at all (None: any)."""
        return None

    def _total_scale(self, mlip: MLIP) -> bool:
        return True

    def _total_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        raise NotImplementedError

    def _formation_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        entries = self._total_entries(elements, mlip)
        minima = _elemental_minima(entries, elements)
        self._require_elements(elements, minima)
        return _to_formation(entries, minima)

    # ---- machinery ----
    def _resolve(self, mlip: MLIP | None) -> MLIP:
        mlip = mlip or self.mlip
        if mlip is None:
            raise ValueError(f"{self.name}: pass the MLIP whose energies are being placed on the hull")
        return mlip

    def _require_elements(self, elements: frozenset[str], available: Any) -> None:
        missing = sorted(el for el in elements if el not in available)
        if missing:
            raise ScoringError(f"reference {self.name} has no elemental phase for {', '.join(missing)}")

    def phase_diagram(self, elements: frozenset[str] | set[str], mlip: MLIP | None = None) -> tuple[PhaseDiagram, bool]:
        """The reference PhaseDiagram of a chemical system and whether it holds only elements."""
        mlip = self._resolve(mlip)
        elements = frozenset(elements)
        covered = self.covered_elements()
        if covered is not None and not elements <= covered:
            raise ScoringError(
                f"reference {self.name} covers only {'-'.join(sorted(covered))}; "
                f"structure has {', '.join(sorted(elements - covered))}"
            )
        total = self._total_scale(mlip)
        key = (mlip_key(mlip), total, elements)
        with self._lock:
            if key in self._diagrams:
                self._diagrams.move_to_end(key)
                return self._diagrams[key]
            entries = self._total_entries(elements, mlip) if total else self._formation_entries(elements, mlip)
            self._require_elements(elements, {el.symbol for e in entries if not _is_compound(e) for el in e.composition.elements})
            diagram = (PhaseDiagram(entries, elements=[Element(el) for el in sorted(elements)]),
                       not any(_is_compound(e) for e in entries))
            self._diagrams[key] = diagram
            if len(self._diagrams) > _PD_CACHE_SIZE:
                self._diagrams.popitem(last=False)
            return diagram

    def coverage(self, elements: frozenset[str], diagram: PhaseDiagram) -> Coverage:
        """How completely this reference's phases cover the system (``core.scoring.coverage.classify``)."""
        return classify(elements, [{el.symbol for el in e.composition.elements} for e in diagram.all_entries if _is_compound(e)])

    def _query_entry(self, structure: Structure, energy_ev: float, mlip: MLIP) -> tuple[Any, float]:
        """The query as an entry on this reference's scale, and its correction (eV/atom)."""
        entry = mlip_entry(structure, energy_ev, corrected=bool(mlip.mp_compatible))
        correction = entry.correction / len(structure)
        if self._total_scale(mlip):
            return entry, correction
        elements = _chemsys(structure)
        potentials = mlip_elemental_potentials(elements, mlip)
        reference = sum(amount * potentials[el.symbol] for el, amount in structure.composition.items())
        return PDEntry(structure.composition, entry.energy - reference, name="query"), correction

    def e_above_hull(self, structure: Structure, energy_ev: float, mlip: MLIP | None = None) -> HullResult:
        """E_hull of one structure with MLIP total energy ``energy_ev`` (eV). Raises ScoringError."""
        result = self.e_above_hull_many([structure], [energy_ev], mlip)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def e_above_hull_many(self, structures: Sequence[Structure], energies_ev: Sequence[float],
                          mlip: MLIP | None = None) -> list[HullResult | Exception]:
        """E_hull of many structures; a failing one holds its exception (ScoringError) in its slot.

        Structures are grouped by chemical system so each reference diagram is built once.
        """
        mlip = self._resolve(mlip)
        results: list[HullResult | Exception] = [ScoringError("not computed")] * len(structures)
        groups: dict[frozenset[str], list[int]] = {}
        for index, structure in enumerate(structures):
            groups.setdefault(_chemsys(structure), []).append(index)
        for elements, indices in groups.items():
            try:
                diagram, elements_only = self.phase_diagram(elements, mlip)
            except Exception as exc:  # noqa: BLE001 - the whole chemical system fails, not the batch
                for index in indices:
                    results[index] = exc if isinstance(exc, ScoringError) else ScoringError(f"hull reference: {exc}")
                continue
            coverage = self.coverage(elements, diagram)
            for index in indices:
                try:
                    entry, correction = self._query_entry(structures[index], energies_ev[index], mlip)
                    decomposition, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
                    results[index] = HullResult(
                        e_above_hull=float(e_hull),
                        e_form_per_atom=float(diagram.get_form_energy_per_atom(entry)),
                        reference=self.name, elements_only=elements_only,
                        decomposition=_decomposition_text(decomposition), correction_per_atom=float(correction),
                        coverage=coverage.kind, missing_pairs=coverage.missing_pairs,
                    )
                except ScoringError as exc:
                    results[index] = exc
                except Exception as exc:  # noqa: BLE001
                    results[index] = ScoringError(f"hull: {exc}")
        return results


class BundledReference(HullReference):
    """matbench_dielectric + MP hull-file structures and relaxed elemental phases, all with the query's MLIP.

    ``relaxed``: compounds relaxed like candidates (FIRE + FrechetCellFilter, ``references.store``'s
    ``RELAXED_RECIPE``) instead of static at their DFT geometry: the reference for relaxed candidates.
    ``exclude``: row names (``references.bundled``) left out, e.g. a system's compounds in a
    leave-system-out test.
    """

    def __init__(self, mlip: MLIP | None = None, relaxed: bool = False, exclude: frozenset[str] = frozenset()) -> None:
        version = f"{BUNDLED_VERSION}-relaxed-{RELAXED_RECIPE}" if relaxed else BUNDLED_VERSION
        super().__init__(
            name=f"{version}/{mlip.name}" if mlip is not None else version,
            description=("Materials Project structures (matbench_dielectric from crystal-toolkit, and the MP hull files "
                         "of shared/data/hulls) and relaxed elemental phases, energies from the same MLIP"
                         + (", compounds relaxed like the candidates" if relaxed else ", compounds static at their MP geometry")),
            mlip=mlip,
        )
        self.relaxed = relaxed
        self.exclude = frozenset(exclude)
        self._compound_entries: dict[tuple[str, bool, str], ComputedStructureEntry | None] = {}

    def compound_rows(self, elements: frozenset[str]) -> list[str]:
        from core.scoring.references.bundled import load_bundled_compounds

        return [row for row in load_bundled_compounds().rows_within(elements) if row not in self.exclude]

    def _total_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        from core.scoring.references.bundled import load_bundled_compounds

        table = load_bundled_compounds()
        store = reference_energies(mlip)
        corrected = bool(mlip.mp_compatible)
        rows = self.compound_rows(elements)
        energies = store.compound_energies(rows, table.structure, relaxed=self.relaxed)
        entries: list[Any] = []
        for row in rows:
            key = (mlip_key(mlip), corrected, row)
            if key not in self._compound_entries:
                energy = energies[row]
                entry = None
                if not isinstance(energy, str):
                    try:
                        entry = mlip_entry(table.structure(row), energy, corrected=corrected,
                                           entry_id=f"bundled-{row}")
                    except ScoringError:
                        entry = None
                self._compound_entries[key] = entry
            if self._compound_entries[key] is not None:
                entries.append(self._compound_entries[key])
        entries.extend(elemental_entries(elements, mlip))
        return entries


class CompletedBundledReference(BundledReference):
    """The bundled reference, completed on demand (``core.scoring.completion``): in a system with expected
    element pairs no reference compound holds, substituted binaries relaxed with the MLIP join the hull
    (≤ ``max_relaxations`` per system, cached per MLIP and pair). ``reports`` maps each completed system
    ("F-Lu-..." sorted) to its ``CompletionReport``; ``progress`` (a callable taking a line of text) hears
    what is being relaxed."""

    def __init__(self, mlip: MLIP | None = None, relaxed: bool = False, exclude: frozenset[str] = frozenset(),
                 max_relaxations: int | None = None, progress: Any = None) -> None:
        from core.scoring.completion import COMPLETION_RECIPE, MAX_RELAXATIONS

        super().__init__(mlip, relaxed=relaxed, exclude=exclude)
        self.name = self.name.replace("bundled-", f"bundled+complete-{COMPLETION_RECIPE}-", 1)
        self.description += "; systems missing expected binaries are completed by relaxed prototype substitution"
        self.max_relaxations = MAX_RELAXATIONS if max_relaxations is None else int(max_relaxations)
        self.progress = progress
        self.reports: dict[str, Any] = {}

    def _total_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        from core.scoring.completion import PREFIX, complete_system

        entries = super()._total_entries(elements, mlip)
        gap = classify(elements, [{el.symbol for el in e.composition.elements} for e in entries if _is_compound(e)])
        if gap.kind == "full" or not gap.missing_pairs:
            return entries
        report = complete_system(elements, gap.missing_pairs, mlip, self.max_relaxations, self.progress)
        self.reports[report.system] = report
        corrected = bool(mlip.mp_compatible)
        for index, phase in enumerate(report.added):
            try:
                entries.append(mlip_entry(Structure.from_dict(phase["structure"]), phase["energy_ev"], corrected=corrected,
                                          entry_id=f"{PREFIX}{phase['formula']}-{phase['template']}-{index}"))
            except ScoringError:
                continue
        return entries

    def coverage(self, elements: frozenset[str], diagram: PhaseDiagram) -> Coverage:
        from core.scoring.completion import PREFIX, completed_coverage

        compounds = [e for e in diagram.all_entries if _is_compound(e)]
        sets = [{el.symbol for el in e.composition.elements} for e in compounds]
        base = [s for s, e in zip(sets, compounds) if not str(getattr(e, "entry_id", "") or "").startswith(PREFIX)]
        return completed_coverage(elements, base, sets)


def on_mp2020_scale(mlip: MLIP) -> bool:
    """Whether the MLIP's energies, after ``mlip_entry``, are on MP's MP2020-corrected scale: raw MP
    energies that get the corrections (``mp_compatible``) or energies trained on already-corrected
    MP data (``energy_scale == "mp2020"``, e.g. CHGNet)."""
    return bool(mlip.mp_compatible) or mlip.energy_scale == "mp2020"


class DFTEntriesReference(HullReference):
    """Reference phases with DFT energies (MP2020-corrected total energies: Kind A files, mp-api)."""

    def _total_scale(self, mlip: MLIP) -> bool:
        return on_mp2020_scale(mlip)

    def _dft_entries(self, elements: frozenset[str]) -> list[Any]:
        raise NotImplementedError

    def _total_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        return self._dft_entries(elements)


class EntriesFileReference(DFTEntriesReference):
    """Reference phases read from an entries file (Kind A total energies or Kind B formation energies)."""

    def __init__(self, path: str | Path, mlip: MLIP | None = None) -> None:
        self.file = read_entries_file(path)
        kind = "MP2020-corrected DFT total energies" if self.file.kind == "total" else "DFT formation energies"
        super().__init__(name=f"file:{self.file.path.name}",
                         description=f"{len(self.file.entries)} entries ({kind}) from {self.file.path}", mlip=mlip)
        self._elements = self.file.elements

    def covered_elements(self) -> frozenset[str]:
        return self._elements

    def _total_scale(self, mlip: MLIP) -> bool:
        return self.file.kind == "total" and on_mp2020_scale(mlip)

    def _dft_entries(self, elements: frozenset[str]) -> list[Any]:
        return [e for e in self.file.entries if {el.symbol for el in e.composition.elements} <= elements]

    def _formation_entries(self, elements: frozenset[str], mlip: MLIP) -> list[Any]:
        if self.file.kind == "formation":
            return self._dft_entries(elements)
        return super()._formation_entries(elements, mlip)


class MPAPIReference(DFTEntriesReference):
    """Materials Project entries fetched per chemical system (needs MP_API_KEY)."""

    def __init__(self, mlip: MLIP | None = None, api_key: str | None = None) -> None:
        from core.scoring.references.mp_api import MPEntriesClient

        self.client = MPEntriesClient(api_key)
        super().__init__(name="mp-api", description="Materials Project GGA/GGA+U entries (MP2020-corrected), via mp-api",
                         mlip=mlip)

    def _dft_entries(self, elements: frozenset[str]) -> list[Any]:
        return self.client.entries(elements)


# ---------------------------------------------------------------- MLIP elemental phases

_STORES: dict[str, ReferenceEnergies] = {}
_STORES_LOCK = threading.Lock()


def reference_energies(mlip: MLIP) -> ReferenceEnergies:
    """The (process-wide) cached bundled reference energies of ``mlip``."""
    key = mlip_key(mlip)
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = ReferenceEnergies(mlip)
        return _STORES[key]


def elemental_entries(elements: frozenset[str], mlip: MLIP) -> list[ComputedEntry]:
    """Relaxed elemental reference phases of ``elements`` computed with ``mlip`` (total energies, eV).

    Raises:
        ScoringError: an element has no phase the MLIP could compute (message gives the reasons).
    """
    store = reference_energies(mlip)
    entries: list[ComputedEntry] = []
    for symbol in sorted(elements):
        phases = store.element_phases(symbol)
        good = [p for p in phases if "energy_per_atom" in p]
        if not good:
            reasons = "; ".join(f"{p['label']}: {p.get('error')}" for p in phases) or "no candidate phase"
            raise ScoringError(f"no elemental reference for {symbol} with {mlip.label} ({reasons})")
        for phase in good:
            entries.append(ComputedEntry(Composition({symbol: 1}), phase["energy_per_atom"],
                                         entry_id=f"{symbol}-{phase['label']}"))
    return entries


def mlip_elemental_potentials(elements: frozenset[str], mlip: MLIP) -> dict[str, float]:
    """The MLIP's elemental chemical potentials (eV/atom): lowest of its relaxed elemental phases and
    the elemental structures of the bundled compound set (static)."""
    from core.scoring.references.bundled import load_bundled_compounds

    table = load_bundled_compounds()
    unary_rows = [row for row in table.rows_within(elements) if len(table.element_sets[row]) == 1]
    energies = reference_energies(mlip).compound_energies(unary_rows, table.structure)
    entries: list[Any] = list(elemental_entries(elements, mlip))
    for row in unary_rows:
        if not isinstance(energies[row], str):
            entries.append(ComputedEntry(table.structure(row).composition, energies[row]))
    return _elemental_minima(entries, elements)


# ---------------------------------------------------------------- entry point

_REFERENCES: dict[tuple[str, str, bool], HullReference] = {}


def load_hull_reference(kind: str | Path = "bundled", mlip: MLIP | None = None, relaxed: bool = False) -> HullReference:
    """The reference set ``kind``: "bundled", "mp-api" or a path to an entries file (cached per MLIP).

    ``relaxed`` (bundled only): compounds relaxed like candidates, the reference for relaxed candidates
    (``score(relax=True)`` asks for it), so both sides stand on the same footing.

    Raises:
        MissingResourceError: an entries file or the MP API key is missing.
        InvalidInputError: an entries file cannot be read.
    """
    text = str(kind).strip()
    if text not in HULL_KINDS and not Path(text).expanduser().exists():
        raise MissingResourceError(
            f"hull reference {text!r} is neither {' nor '.join(repr(k) for k in HULL_KINDS)} nor an existing "
            "entries file (e.g. ../shared/data/hulls/Na-Fe-P-O.json.gz)"
        )
    relaxed = bool(relaxed) and text.startswith("bundled")
    key = (text if text in HULL_KINDS else str(Path(text).expanduser().resolve()), mlip_key(mlip) if mlip else "", relaxed)
    if key not in _REFERENCES:
        if text == "bundled":
            _REFERENCES[key] = BundledReference(mlip, relaxed=relaxed)
        elif text == "bundled+complete":
            _REFERENCES[key] = CompletedBundledReference(mlip, relaxed=relaxed)
        elif text == "mp-api":
            _REFERENCES[key] = MPAPIReference(mlip)
        elif text == "alexandria":
            from core.scoring.references.alexandria import AlexandriaReference

            _REFERENCES[key] = AlexandriaReference(mlip=mlip)
        else:
            _REFERENCES[key] = EntriesFileReference(text, mlip)
    return _REFERENCES[key]
