"""Machine-learned interatomic potentials (MLIPs) behind one interface.

Every backend takes pymatgen ``Structure``s and returns, per structure, an ``EnergyResult`` (total
energy in eV, energy per atom in eV/atom, forces in eV/Å, stress in eV/Å³) or the exception that
structure raised, so one bad structure never sinks a batch. ``calculator()`` gives the same model
as an ASE calculator (energy eV, forces eV/Å, stress eV/Å³ in ASE's Voigt order and sign) for
relaxations.

=====================  ==========================================  =============  ====================================
name                   model                                        energy scale   energy correction for the hull
=====================  ==========================================  =============  ====================================
``m3gnet`` (default)   M3GNet-MP-2021.2.8-PES (matgl)               mp-raw         MP2020 (``mp_compatible=True``)
``m3gnet-matpes``      M3GNet-MatPES-PBE-v2025.1-PES (matgl)        matpes-pbe     none (``mp_compatible=False``)
``tensornet-matpes``   TensorNet-MatPES-PBE-v2025.1-PES (matgl)     matpes-pbe     none (``mp_compatible=False``)
``chgnet``             CHGNet 0.3.0 (MPtrj)                         mp2020         none: already MP2020-corrected
``sevennet``           SevenNet-0 (11Jul2024, MPtrj)                mp-raw         MP2020 (``mp_compatible=True``)
``sevennet-l3i5``      7net-l3i5 (MPtrj; in the sevenn wheel)       mp-raw         MP2020 (``mp_compatible=True``)
``sevennet-mf-0``      7net-mf-0, PBE modal (in the sevenn wheel)   mp-raw         MP2020 (``mp_compatible=True``)
``sevennet-mf-ompa``   7net-mf-ompa, mpa modal (download)           mp-raw         MP2020 (``mp_compatible=True``)
``orb``                Orb v2 (MPtrj + Alexandria; weights: file)   mp-raw         MP2020 (``mp_compatible=True``)
``orb-v3``             orb-v3-conservative-inf-mpa (download)       mp-raw         MP2020 (``mp_compatible=True``)
=====================  ==========================================  =============  ====================================

``energy_scale`` says what a backend's energies are: ``"mp-raw"`` raw PBE/PBE+U total energies as
MP computes them (``mp_compatible=True``: apply ``MaterialsProject2020Compatibility``),
``"mp2020"`` MP energies with the MP2020 corrections already included (CHGNet was trained on MPtrj's
corrected energies: against 25 MP GGA+U oxides its MAE is 0.045 eV/atom to the corrected and 0.96
eV/atom to the raw energies, so correcting again would count the corrections twice), and
``"matpes-pbe"`` MatPES's PBE settings (no Hubbard U; not on MP's GGA+U scale).

Inputs every backend refuses with a ``ScoringError`` in that slot (``check_structure``): whatever the
scorers' one input screen refuses (``core.scoring.inputs.input_problem``: a non-finite or degenerate
lattice, a disordered structure, more atoms or a longer cell edge than ``InputLimits`` allow, two atoms
closer than 0.5 Å), an element the model was not trained on, and an atom with no neighbour within the
model's cutoff.
"""
from __future__ import annotations

import importlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pymatgen.core import Structure

from core.errors import InvalidInputError, ScoringError
from core.cell_memo import Cell
from core.neighbors import RADIUS_A as NEIGHBOR_RADIUS_A
from core.neighbors import neighbor_list
from core.scoring.device import pick_torch_device
from core.scoring.inputs import DEFAULT_LIMITS, InputLimits, input_problem
from core.scoring.batching import isolate_failures

MLIP_NAMES = ("m3gnet", "m3gnet-matpes", "tensornet-matpes", "chgnet", "sevennet", "sevennet-l3i5", "sevennet-mf-0",
              "sevennet-mf-ompa", "orb", "orb-v3")
DEFAULT_MLIP = "m3gnet"   # by measurement: 13 vs 118 ms per energy for SevenNet-0 (bench/scoring.md) at a relaxed E_hull
                          # MAE of 0.015 vs 0.012 eV/atom for SevenNet-0, the most accurate (bench/mlip_accuracy.md)
ACCURATE_MLIP = "sevennet-l3i5"   # for trust / shortlist assessments and relaxed hulls: lowest E_hull MAE in
                                  # bench/mlip_accuracy.md (static 0.028 vs 0.044 SevenNet-0 and 0.062 M3GNet;
                                  # relaxed 0.032, n = 8) at 0.93 structures/s vs 30.9 for M3GNet in the same run
GPA_PER_EV_A3 = 160.21766208  # 1 eV/Å³ in GPa

# registry key -> (module, factory function); modules import their outside library lazily
_FACTORIES: dict[str, tuple[str, str]] = {
    "m3gnet": ("core.scoring.backends.matgl_backend", "m3gnet_mp"),
    "m3gnet-matpes": ("core.scoring.backends.matgl_backend", "m3gnet_matpes"),
    "tensornet-matpes": ("core.scoring.backends.matgl_backend", "tensornet_matpes"),
    "chgnet": ("core.scoring.backends.chgnet_backend", "chgnet"),
    "sevennet": ("core.scoring.backends.sevennet_backend", "sevennet"),
    "orb": ("core.scoring.backends.orb_backend", "orb"),
    # more SevenNet checkpoints (two in the wheel, one downloaded) and Orb v3 (downloaded weights)
    "sevennet-l3i5": ("core.scoring.backends.sevennet_backend", "sevennet_l3i5"),
    "sevennet-mf-0": ("core.scoring.backends.sevennet_backend", "sevennet_mf_0"),
    "sevennet-mf-ompa": ("core.scoring.backends.sevennet_backend", "sevennet_mf_ompa"),
    "orb-v3": ("core.scoring.backends.orb_backend", "orb_v3"),
}


@dataclass
class EnergyResult:
    """Static MLIP prediction for one structure.

    Attributes:
        energy_ev: total energy, eV.
        energy_per_atom: total energy / number of sites, eV/atom.
        forces: (n_sites, 3) forces, eV/Å (None after ``predict(..., forces=False)``).
        stress: (6,) stress in ASE's Voigt order (xx, yy, zz, yz, xz, xy) and sign, eV/Å³
            (negative under compression; None after ``predict(..., forces=False)``).
    """

    energy_ev: float
    energy_per_atom: float
    forces: np.ndarray | None
    stress: np.ndarray | None


@runtime_checkable
class MLIP(Protocol):
    """What every interatomic potential offers the scorers (relaxation, hull, reference store, pipeline).

    Attributes:
        name: registry name (``MLIP_NAMES``).
        label: the model's own name (messages, cache keys of computed references).
        mp_compatible: energies are raw MP-like PBE(+U) totals that MP2020 corrections apply to.
        energy_scale: ``"mp-raw"``, ``"mp2020"`` (trained on corrected energies) or another scale name.
        cutoff_a: neighbour cutoff, Å (an atom with no neighbour within it cannot be evaluated).
    """

    name: str
    label: str
    mp_compatible: bool
    energy_scale: str
    cutoff_a: float

    def check(self, structure: Structure) -> None:
        """Raise ScoringError with a one-line reason if this model cannot evaluate ``structure``."""

    def calculator(self) -> Any:
        """A fresh ASE calculator running this model (energy eV, forces eV/Å, stress eV/Å³)."""

    def predict(self, structures: Sequence[Structure], forces: bool = True) -> list[EnergyResult | Exception]:
        """Energy per structure (forces and stress too unless ``forces=False``), or that structure's exception."""


def check_structure(structure: Structure, *, label: str, elements: frozenset[str] | None, cutoff_a: float,
                    limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Raise ScoringError with a one-line reason if ``structure`` cannot be given to model ``label``.

    Args:
        structure: the crystal.
        label: model name used in messages.
        elements: element symbols the model covers (None: any).
        cutoff_a: the model's neighbour cutoff, Å; an atom with no neighbour within it is refused.
        limits: size and distance bounds.
    """
    problem = input_problem(structure, limits, distances=False)
    if problem is not None:
        raise ScoringError(problem)
    cell = Cell.of(structure)
    if elements is not None:
        missing = sorted(cell.element_symbols() - elements)
        if missing:
            raise ScoringError(f"element {', '.join(missing)} not covered by {label}")
    radius = max(cutoff_a, limits.min_distance_a)
    try:
        pairs = neighbor_list(structure, max(radius, NEIGHBOR_RADIUS_A), cell)  # one list per structure for every model
    except ValueError as exc:  # no list for this cell (atoms packed too densely, a longer cell than it allows)
        raise ScoringError(str(exc)) from exc
    close = pairs.distances < limits.min_distance_a
    if np.any(close):
        i, j = int(pairs.centres[close][0]), int(pairs.neighbours[close][0])
        raise ScoringError(f"overlapping atoms: sites {i} ({structure[i].specie}) and {j} ({structure[j].specie}) "
                           f"are {float(pairs.distances[close].min()):.3f} Å apart (< {limits.min_distance_a} Å)")
    lonely = np.flatnonzero(pairs.nearest > radius)
    if lonely.size:
        site = int(lonely[0])
        raise ScoringError(f"isolated atom: site {site} ({structure[site].specie}) has no neighbour within "
                           f"the {cutoff_a:g} Å cutoff of {label}")


class BatchedMLIP(ABC):
    """Common ``predict``: screens each structure, groups the good ones into batches, isolates failures.

    Subclasses set ``name``, ``label``, ``mp_compatible``, ``energy_scale``, ``elements``, ``cutoff_a``
    and ``device`` and implement ``_predict_batch`` and ``calculator``.

    Attributes:
        batch_size: most structures per batched model call.
        max_batch_atoms: most atoms per batched model call.
    """

    name: str
    label: str
    mp_compatible: bool
    energy_scale: str
    elements: frozenset[str] | None
    cutoff_a: float
    device: str
    batch_size: int = 32
    max_batch_atoms: int = 3000
    limits: InputLimits = DEFAULT_LIMITS

    @abstractmethod
    def _predict_batch(self, structures: list[Structure], forces: bool) -> list[tuple[float, Any, Any]]:
        """(total energy eV, forces (n, 3) eV/Å, Voigt stress (6,) eV/Å³) per structure, in one model call.

        With ``forces=False`` a backend may skip the gradients and return None for forces and stress.
        """

    @abstractmethod
    def calculator(self) -> Any:
        """A fresh ASE calculator running this model (energy eV, forces eV/Å, stress eV/Å³)."""

    def check(self, structure: Structure) -> None:
        """Raise ScoringError if this model cannot evaluate ``structure``."""
        check_structure(structure, label=self.label, elements=self.elements, cutoff_a=self.cutoff_a,
                        limits=self.limits)

    def predict(self, structures: Sequence[Structure], forces: bool = True) -> list[EnergyResult | Exception]:
        """Static energy, forces and stress of each structure; a failing structure yields its exception.

        ``forces=False`` asks for energies only (forces and stress None); backends that get forces
        from autograd (matgl, CHGNet) then skip the backward pass, about twice as fast.
        """
        def run(batch: list[Structure]) -> list[EnergyResult | Exception]:
            return [self._to_result(s, *values) for s, values in zip(batch, self._predict_batch(batch, forces))]

        return predict_in_batches(structures, self.check, run, self.label, self.batch_size, self.max_batch_atoms)

    def predict_prescreened(self, structures: Sequence[Structure], forces: bool = True) -> list[EnergyResult | Exception]:
        """``predict`` without the input screen (``check``), for structures derived from ones that passed it:
        the steps of a relaxation, a few hundredths of an Å apart, as ASE's calculator path never screens
        them either. Failures are still isolated per structure and a non-finite result is still an error."""
        def run(batch: list[Structure]) -> list[EnergyResult | Exception]:
            return [self._to_result(s, *values) for s, values in zip(batch, self._predict_batch(batch, forces))]

        return predict_in_batches(structures, _no_screen, run, self.label, self.batch_size, self.max_batch_atoms)

    def _to_result(self, structure: Structure, energy: float, forces: Any, stress: Any) -> EnergyResult | Exception:
        forces = None if forces is None else np.asarray(forces, dtype=float).reshape(len(structure), 3)
        stress = None if stress is None else np.asarray(stress, dtype=float).reshape(6)
        arrays = [a for a in (forces, stress) if a is not None]
        if not (math.isfinite(energy) and all(np.all(np.isfinite(a)) for a in arrays)):
            return ScoringError(f"{self.label} returned a non-finite energy, force or stress")
        return EnergyResult(float(energy), float(energy) / len(structure), forces, stress)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self.label} on {self.device}>"


def _no_screen(structure: Structure) -> None:
    """The check of ``predict_prescreened``: none."""


def predict_in_batches(structures: Sequence[Structure], check: Callable[[Structure], None],
                       run: Callable[[list[Structure]], list[Any]], label: str, batch_size: int,
                       max_batch_atoms: int | None = None) -> list[Any]:
    """Screen every structure with ``check``, then evaluate the good ones with ``run`` in batches.

    A batch limit is ``batch_size`` structures and ``max_batch_atoms`` atoms. A batch whose ``run``
    raises is split into single structures, so only the one that breaks gets an error; every slot
    of the returned list holds ``run``'s result for that structure or the exception it raised.
    """
    results: list[Any] = [None] * len(structures)
    good: list[int] = []
    for i, structure in enumerate(structures):
        try:
            check(structure)
            good.append(i)
        except ScoringError as exc:
            results[i] = exc
        except Exception as exc:  # a malformed object must not stop the others
            results[i] = ScoringError(f"invalid structure: {type(exc).__name__}: {exc}")

    def isolate(batch: list[Structure]) -> list[Any]:
        return isolate_failures(run, batch, lambda exc: ScoringError(f"{label} failed: {type(exc).__name__}: {exc}"))

    chunk: list[int] = []
    atoms = 0
    for i in [*good, None]:
        n = len(structures[i]) if i is not None else 0
        full = chunk and (i is None or len(chunk) >= batch_size
                          or (max_batch_atoms is not None and atoms + n > max_batch_atoms))
        if full:
            for j, result in zip(chunk, isolate([structures[j] for j in chunk])):
                results[j] = result
            chunk, atoms = [], 0
        if i is not None:
            chunk.append(i)
            atoms += n
    return results


def stress_3x3_to_voigt(stress: np.ndarray) -> np.ndarray:
    """(…, 3, 3) stress tensors -> (…, 6) in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    s = np.asarray(stress, dtype=float)
    return np.stack([s[..., 0, 0], s[..., 1, 1], s[..., 2, 2], s[..., 1, 2], s[..., 0, 2], s[..., 0, 1]], axis=-1)


_CACHE: dict[tuple[str, str, tuple[tuple[str, str], ...]], MLIP] = {}
_CACHE_LOCK = threading.Lock()


def load_mlip(name: str = DEFAULT_MLIP, device: str | None = None, **kw: Any) -> MLIP:
    """The MLIP registered under ``name`` (see ``MLIP_NAMES``), loaded once per (name, device, options).

    Args:
        name: registry key, case-insensitive.
        device: torch device; default ``pick_torch_device()`` (CUDA if present, env ``CFRL_TORCH_DEVICE``).
        **kw: backend options, e.g. ``weights=`` / ``variant=`` for ``orb``, ``model=`` for ``chgnet``.

    Raises:
        InvalidInputError: unknown name.
        MissingResourceError: the model's weights are absent (the message says where to get them).
    """
    key = str(name).strip().lower()
    if key not in _FACTORIES:
        raise InvalidInputError(f"unknown MLIP {name!r}; choose one of {', '.join(MLIP_NAMES)}")
    resolved = pick_torch_device(device)
    cache_key = (key, resolved, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    with _CACHE_LOCK:
        if cache_key not in _CACHE:
            module, factory = _FACTORIES[key]
            _CACHE[cache_key] = getattr(importlib.import_module(module), factory)(device=resolved, **kw)
        return _CACHE[cache_key]


def clear_mlip_cache() -> None:
    """Forget every loaded MLIP (frees their memory once no one else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
