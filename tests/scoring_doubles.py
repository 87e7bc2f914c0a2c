"""Test doubles for the scoring engine: an MLIP whose energies are known exactly, and property models.

``FakeMLIP`` gives every structure the energy Σ_atoms μ(element) + shift·N, with μ per element from a
dict and ``shift`` (eV/atom) read from ``structure.properties["shift"]`` (0 if absent); forces and
stress are zero, so any relaxation stops at once. Every compound made of such energies has formation
energy ``shift`` exactly, which makes hull expectations exact. It implements the ``MLIP`` protocol of
``core.scoring.mlip`` like a real backend: ``check`` refuses an element outside its table and an atom
with no neighbour within 5 Å (ScoringError), and ``predict`` reports them in that slot.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError

ISOLATION_CUTOFF_A = 5.0


@dataclass
class FakeEnergy:
    energy_ev: float
    energy_per_atom: float
    forces: np.ndarray
    stress: np.ndarray


class FakeCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potentials: dict[str, float]) -> None:
        super().__init__()
        self.potentials = potentials

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energy = float(sum(self.potentials[s] for s in self.atoms.get_chemical_symbols()))
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.zeros((len(self.atoms), 3)), "stress": np.zeros(6)}


@dataclass
class FakeMLIP:
    potentials: dict[str, float]
    name: str = "fake"
    label: str = "fake-linear"
    mp_compatible: bool = False
    energy_scale: str = "linear-test"
    cutoff_a: float = ISOLATION_CUTOFF_A
    calls: list[list[str]] = field(default_factory=list)   # formulas of every predict call

    def check(self, structure: Structure) -> None:
        missing = sorted({el.symbol for el in structure.composition.elements} - set(self.potentials))
        if missing:
            raise ScoringError(f"element {', '.join(missing)} not covered by {self.label}")
        centres = set(structure.get_neighbor_list(self.cutoff_a)[0].tolist())
        lonely = [i for i in range(len(structure)) if i not in centres]
        if lonely:
            raise ScoringError(f"isolated atom {structure[lonely[0]].specie} (no neighbour within {self.cutoff_a} Å)")

    def energy(self, structure: Structure) -> float:
        self.check(structure)
        shift = float(structure.properties.get("shift", 0.0))
        return sum(self.potentials[el.symbol] * n for el, n in structure.composition.items()) + shift * len(structure)

    def predict(self, structures: Sequence[Structure], forces: bool = True) -> list[FakeEnergy | Exception]:
        self.calls.append([s.composition.reduced_formula for s in structures])
        out: list[FakeEnergy | Exception] = []
        for structure in structures:
            try:
                energy = self.energy(structure)
            except ScoringError as exc:
                out.append(exc)
                continue
            out.append(FakeEnergy(energy, energy / len(structure), np.zeros((len(structure), 3)), np.zeros(6)))
        return out

    def calculator(self) -> Calculator:
        return FakeCalculator(self.potentials)


class FakePropertyModel:
    """predict -> value per structure from a function; raises for structures with element ``bad``."""

    def __init__(self, fn, bad: str | None = None) -> None:
        self.fn, self.bad = fn, bad

    def predict(self, structures: list[Structure]) -> list[float | Exception]:
        return [ScoringError(f"{self.bad} unsupported") if self.bad and self.bad in s.composition else float(self.fn(s))
                for s in structures]


FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def rocksalt(a: float = 5.69, species: tuple[str, str] = ("Na", "Cl"), shift: float = 0.0) -> Structure:
    """Conventional rock-salt cell (8 atoms, a in Å), built directly: ``Structure.from_spacegroup`` on
    Fm-3m compares its 192 operations pairwise and takes seconds. ``shift`` (eV/atom) feeds FakeMLIP."""
    cation, anion = species
    coords = FCC + [[(x + 0.5) % 1, (y + 0.5) % 1, (z + 0.5) % 1] for x, y, z in FCC]
    structure = Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, coords)
    structure.properties["shift"] = shift
    return structure


def fluorite(a: float, species: tuple[str, str]) -> Structure:
    """Conventional fluorite cell AB2 (12 atoms, a in Å)."""
    cation, anion = species
    anions = [[x, y, z] for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)]
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 8, FCC + anions)
