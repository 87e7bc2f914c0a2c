"""relax(): FIRE + FrechetCellFilter brings strained crystals back to their energy minimum.

Independent expectations: the minimum of the same potential's energy-volume curve (ASE's EMT for
Cu, scanned here), M3GNet-MP-2021.2.8-PES's published NaCl lattice constant (5.69132 Å, model card)
and energy at 5.69 Å (−3.3675 eV/atom).
"""
from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError
from core.scoring.mlip import load_mlip
from core.scoring.relax import relax


class EMTPotential:
    """ASE's effective-medium potential behind the MLIP protocol (fast, analytic, Cu/Al/Ni/Ag/Au/Pd/Pt)."""

    name, label, mp_compatible, energy_scale, cutoff_a = "emt", "ASE EMT", False, "emt", 6.0
    elements = frozenset({"Cu", "Al", "Ni", "Ag", "Au", "Pd", "Pt"})

    def check(self, structure):
        from core.scoring.mlip import check_structure

        check_structure(structure, label=self.label, elements=self.elements, cutoff_a=self.cutoff_a)

    def calculator(self):
        from ase.calculators.emt import EMT

        return EMT()

    def predict(self, structures, forces=True):
        from pymatgen.io.ase import AseAtomsAdaptor

        from core.scoring.mlip import EnergyResult

        out = []
        for structure in structures:
            atoms = AseAtomsAdaptor.get_atoms(structure)
            atoms.calc = self.calculator()
            energy = float(atoms.get_potential_energy())
            out.append(EnergyResult(energy, energy / len(structure), atoms.get_forces() if forces else None,
                                    atoms.get_stress() if forces else None))
        return out


def fcc_cu(a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Cu"], [[0, 0, 0]])


def emt_minimum_lattice_constant() -> float:
    """Minimum of EMT's energy-lattice-constant curve of fcc Cu, found by a scalar minimiser (no cell filter)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from scipy.optimize import minimize_scalar

    def energy(a: float) -> float:
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    return float(minimize_scalar(energy, bounds=(3.4, 3.8), method="bounded", options={"xatol": 1e-4}).x)


def test_cell_relaxation_reaches_the_energy_minimum():
    start = fcc_cu(3.85)
    start.perturb(0.05)
    result = relax(start, EMTPotential(), fmax=0.01)
    assert result.converged and 0 < result.steps <= 500
    a = result.structure.lattice.abc
    assert a == pytest.approx([emt_minimum_lattice_constant()] * 3, abs=2e-3)
    assert result.structure.lattice.angles == pytest.approx((90, 90, 90), abs=0.1)
    assert result.energy_per_atom == pytest.approx(result.energy_ev / 4)


def test_step_limit_and_positions_only_mode():
    start = fcc_cu(3.85)
    start.perturb(0.05)
    capped = relax(start, EMTPotential(), steps=3)
    assert (capped.steps, capped.converged) == (3, False)
    fixed_cell = relax(start, EMTPotential(), fmax=0.01, relax_cell=False)
    assert fixed_cell.converged
    assert fixed_cell.structure.lattice.matrix == pytest.approx(start.lattice.matrix)


def test_species_and_site_properties_survive():
    start = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.7), ["Cu"], [[0, 0, 0]])
    start.add_site_property("label", ["a", "b", "c", "d"])
    start.add_oxidation_state_by_element({"Cu": 0})
    result = relax(start, EMTPotential())
    assert [str(sp) for sp in result.structure.species] == [str(sp) for sp in start.species]
    assert result.structure.site_properties["label"] == ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def m3gnet():
    return load_mlip("m3gnet", device="cpu")


def test_bad_input_is_a_scoring_error_or_value_error(m3gnet):
    with pytest.raises(ScoringError, match="isolated atom"):
        relax(Structure(Lattice.cubic(25), ["Na"], [[0, 0, 0]]), m3gnet)
    with pytest.raises(ValueError):
        relax(fcc_cu(3.6), EMTPotential(), fmax=0)


def test_strained_nacl_relaxes_back_with_m3gnet(m3gnet):
    start = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    start.perturb(0.05)
    initial = m3gnet.predict([start])[0].energy_per_atom
    result = relax(start, m3gnet, fmax=0.02)
    assert result.converged
    assert result.energy_per_atom < initial
    assert np.mean(result.structure.lattice.abc) == pytest.approx(5.69132, abs=0.01)  # model card
    assert result.energy_per_atom == pytest.approx(-3.3675, abs=2e-3)  # EOS minimum is flat around 5.69 Å
    assert result.structure.composition == start.composition


def test_test_doubles_implement_the_mlip_protocol():
    """The doubles offer what every backend does (``core.scoring.mlip.MLIP``), so production code never
    probes for attributes: the input check refuses what a real backend refuses."""
    from core.errors import ScoringError
    from core.scoring.mlip import MLIP
    from scoring_doubles import FakeMLIP

    fake, emt = FakeMLIP({"Na": -1.3, "Cl": -1.8}), EMTPotential()
    assert isinstance(fake, MLIP) and isinstance(emt, MLIP)
    emt.check(fcc_cu(3.6))
    with pytest.raises(ScoringError, match="Na not covered"):
        emt.check(Structure(Lattice.cubic(4.0), ["Na"], [[0, 0, 0]]))
    result = emt.predict([fcc_cu(3.6)], forces=False)[0]
    assert result.forces is None and result.energy_per_atom == pytest.approx(result.energy_ev / len(fcc_cu(3.6)))

# ---------------------------------------------------------------- batched FIRE


class BatchedEMT(EMTPotential):
    """EMT with the MLIP ``predict`` interface (energy eV, forces eV/Å, Voigt stress eV/Å³) for relax_many."""

    def predict(self, structures, forces=True):
        from pymatgen.io.ase import AseAtomsAdaptor

        from core.scoring.mlip import EnergyResult

        out = []
        for s in structures:
            if "Cs" in s.composition:                      # stands in for an element the model lacks
                out.append(ScoringError("element Cs not covered by ASE EMT"))
                continue
            atoms = AseAtomsAdaptor.get_atoms(s)
            atoms.calc = self.calculator()
            energy = atoms.get_potential_energy()
            out.append(EnergyResult(energy, energy / len(s), atoms.get_forces(), atoms.get_stress()))
        return out


def strained(element: str, a: float, seed: int) -> Structure:
    rng = np.random.default_rng(seed)
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [element], [[0, 0, 0]])
    return Structure(s.lattice.matrix @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))), s.species,
                     s.frac_coords + 0.01 * rng.standard_normal((4, 3)))


def test_relax_many_follows_ase_fire_with_frechet_cell_filter_step_for_step():
    """The batched relaxer reproduces ASE's FIRE + FrechetCellFilter trajectory of each structure (same step
    count, same final energy and cell), with and without the cell, and a failing structure fails alone."""
    from core.scoring.relax import relax_many

    starts = [strained("Cu", 3.85, 0), strained("Ni", 3.9, 1), strained("Cs", 6.1, 2), strained("Al", 4.2, 3)]
    model = BatchedEMT()
    for relax_cell in (True, False):
        many = relax_many(starts, model, fmax=0.01, relax_cell=relax_cell)
        assert isinstance(many[2], ScoringError) and "Cs" in str(many[2])
        for start, batched in zip(starts, many):
            if start.composition.reduced_formula == "Cs":
                continue
            one = relax(start, model, fmax=0.01, relax_cell=relax_cell)
            assert (batched.steps, batched.converged) == (one.steps, one.converged) and one.converged
            assert batched.energy_per_atom == pytest.approx(one.energy_per_atom, abs=1e-9)
            assert batched.structure.lattice.matrix == pytest.approx(one.structure.lattice.matrix, abs=1e-8)
    capped = relax_many(starts[:1], model, steps=3)[0]
    assert (capped.steps, capped.converged) == (3, False)


class RecordingEMT(BatchedEMT):
    """BatchedEMT that records, per model call, the atoms it was given, whether it was screened, and torch's
    thread count; ``predict_prescreened`` is the unscreened path ``relax_many`` takes after the first step."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []   # (path, atoms, torch threads)

    def _record(self, path, structures):
        import torch

        self.calls.append((path, sum(len(s) for s in structures), torch.get_num_threads()))

    def predict(self, structures, forces=True):
        self._record("screened", structures)
        return super().predict(structures, forces)

    def predict_prescreened(self, structures, forces=True):
        self._record("prescreened", structures)
        return BatchedEMT.predict(self, structures, forces)


def test_relax_many_groups_by_atoms_without_changing_any_trajectory():
    """Groups of at most ``max_group_atoms`` atoms per model call give the trajectories of one group (EMT
    evaluates each structure alone, so they agree exactly); only the start is screened; one torch thread."""
    import torch

    from core.scoring.relax import relax_many

    starts = [strained(el, a, seed) for seed, (el, a) in enumerate([("Cu", 3.85), ("Ni", 3.9), ("Al", 4.2),
                                                                     ("Cu", 3.7), ("Ni", 3.4)])]
    together = relax_many(starts, BatchedEMT(), fmax=0.01, max_group_atoms=10_000)
    threads = torch.get_num_threads()
    for cap, per_call in ((8, 2), (4, 1), (1, 1)):          # 4 atoms each: 2 structures per call, then 1
        model = RecordingEMT()
        grouped = relax_many(starts, model, fmax=0.01, max_group_atoms=cap)
        for a, b in zip(together, grouped):
            assert (a.steps, a.converged) == (b.steps, b.converged) and a.converged
            assert a.energy_ev == b.energy_ev
            assert a.structure.lattice.matrix == pytest.approx(b.structure.lattice.matrix, abs=0)
        assert all(atoms <= max(cap, 4) for _, atoms, _ in model.calls)
        assert model.calls[0] == ("screened", 4 * per_call, 1)
        assert {path for path, _, _ in model.calls[:-(-5 // per_call)]} == {"screened"}   # the first step only
        assert {path for path, _, _ in model.calls[-(-5 // per_call):]} == {"prescreened"}
        assert {n for _, _, n in model.calls} == {1}
        # every model call after the first step holds only unfinished structures: steps + 1 evaluations each
        assert sum(atoms for _, atoms, _ in model.calls) == 4 * sum(r.steps + 1 for r in grouped)
    assert torch.get_num_threads() == threads                 # restored
    with pytest.raises(ValueError):
        relax_many(starts, BatchedEMT(), max_group_atoms=0)


def test_prescreened_predict_skips_the_screen_but_isolates_failures():
    """``BatchedMLIP.predict_prescreened`` never calls ``check``; a structure whose evaluation raises gets its
    own ScoringError and a non-finite energy is an error, as in ``predict``."""
    from core.scoring.mlip import BatchedMLIP

    class Toy(BatchedMLIP):
        name = label = "toy"
        mp_compatible, energy_scale, elements, cutoff_a, device = False, "toy", None, 5.0, "cpu"

        def check(self, structure):
            raise AssertionError("screened")

        def calculator(self):
            raise NotImplementedError

        def _predict_batch(self, structures, forces):
            if any(len(s) == 3 for s in structures):
                raise RuntimeError("three atoms")
            return [(-1.0 * len(s) if len(s) != 2 else float("nan"), np.zeros((len(s), 3)), np.zeros(6))
                    for s in structures]

    def cell(n):
        return Structure(Lattice.cubic(4.0), ["Cu"] * n, [[i / 4, 0, 0] for i in range(n)])

    out = Toy().predict_prescreened([cell(1), cell(2), cell(3), cell(4)])
    assert out[0].energy_ev == -1.0 and out[3].energy_per_atom == -1.0
    assert isinstance(out[1], ScoringError) and "non-finite" in str(out[1])
    assert isinstance(out[2], ScoringError) and "three atoms" in str(out[2])
    screened = Toy().predict([cell(1)])[0]                  # predict screens (and isolates the check's error)
    assert isinstance(screened, ScoringError) and "screened" in str(screened)


def test_unmemoised_neighbour_lists_are_the_same_and_not_stored():
    from core import neighbors

    s = strained("Cu", 3.6, 7)
    neighbors.clear_cache()
    with neighbors.unmemoised():
        transient = neighbors.neighbor_list(s, 5.0)
        assert neighbors.neighbor_list(s, 5.0) is not transient        # computed again: nothing stored
    assert len(neighbors._MEMO._store) == 0
    stored = neighbors.neighbor_list(s, 5.0)
    assert neighbors.neighbor_list(s, 5.0) is stored and len(neighbors._MEMO._store) == 1
    for name in ("centres", "neighbours", "images", "distances", "nearest"):
        assert np.array_equal(getattr(stored, name), getattr(transient, name))
    # brute force over images: Cu at 3.6 Å (strained 3 %) has 12 neighbours within 3.0 Å per atom
    assert np.bincount(stored.centres[stored.distances < 3.0]).tolist() == [12] * 4
