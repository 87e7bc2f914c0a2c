"""Relax structures (atoms and cell) with an MLIP: ASE FIRE on a FrechetCellFilter.

``relax`` runs ASE's FIRE on one structure through the MLIP's ASE calculator; ``relax_many`` runs the
same algorithm on many structures at once, with one batched model call per step and group of at most
``MAX_GROUP_ATOMS`` atoms (``bench/relax.md``); the scoring pipeline relaxes its chunks with it.

Converged means the largest force, and the largest stress component scaled by the cell volume as
``FrechetCellFilter`` does it, fell below ``fmax`` (eV/Å) within ``steps`` optimiser steps. The relaxed
structure keeps the input's species (with any oxidation states) and site properties.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError

DEFAULT_FMAX = 0.1   # eV/Å
DEFAULT_STEPS = 500
MAX_GROUP_ATOMS = 400
"""Most atoms in one batched model call of ``relax_many``. One M3GNet call (energy, forces, stress; 1 torch
thread) on 32 generated crystals (778 atoms), per crystal: 55 ms one at a time, 47 ms in groups of
≤ 60 atoms, 38 ms ≤ 200, 36 ms ≤ 400, 42 ms all in one graph (larger tensors fall out of the cache)."""


@dataclass
class RelaxResult:
    """Outcome of ``relax``.

    Attributes:
        structure: the relaxed structure.
        energy_ev: its total energy, eV.
        energy_per_atom: energy_ev / number of sites, eV/atom.
        steps: optimiser steps taken.
        converged: whether the force/stress criterion was met within the step limit.
    """

    structure: Structure
    energy_ev: float
    energy_per_atom: float
    steps: int
    converged: bool


def one_blas_thread():
    """numpy's BLAS on one thread for a relaxation's many 3×3 and (atoms × 3) products: its idle threads
    spin and take the cores torch computes forces on. 8 relaxations of generated-like crystals on 2 cores
    (M3GNet, 143 FIRE steps in all): 12.0-13.6 s with the default 2 BLAS threads, 5.1-5.3 s with 1
    (``threadpoolctl`` restores the setting afterwards)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """numpy's BLAS (``one_blas_thread``) and torch's intra-op pool on one thread each, restored afterwards.

    torch's default of one thread per core is what made batched relaxation 6x slower than one at a time
    in ``bench/relax.md`` (30 crystals): on a 2-core machine other jobs share, each of its OpenMP regions
    waits for a preempted thread. Measured on 64 generated crystals (1497 atoms, M3GNet, batched
    ``predict`` with forces, other jobs running): 2.1-2.4 s with 1 thread, 11-20 s with 2 once the load
    rose above 3; one 6-atom crystal took 20 ms with 1 thread and 2.0 s with 2.
    """
    import torch

    before = torch.get_num_threads()
    with one_blas_thread():
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def relax(structure: Structure, mlip, fmax: float = DEFAULT_FMAX, steps: int = DEFAULT_STEPS,
          relax_cell: bool = True) -> RelaxResult:
    """Relax ``structure`` with ``mlip``'s ASE calculator (FIRE; cell via FrechetCellFilter).

    Args:
        structure: starting crystal.
        mlip: an ``MLIP`` (``core.scoring.mlip``); its ``check`` screens the input.
        fmax: force convergence threshold, eV/Å.
        steps: most FIRE steps.
        relax_cell: also relax the lattice (FrechetCellFilter); False relaxes positions only.

    Raises:
        ScoringError: the structure cannot be evaluated, or the relaxation ran into a non-finite energy.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    if fmax <= 0 or steps < 0:
        raise ValueError(f"need fmax > 0 and steps >= 0 (got fmax={fmax}, steps={steps})")
    mlip.check(structure)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = mlip.calculator()
    optimizer = FIRE(FrechetCellFilter(atoms) if relax_cell else atoms, logfile=None)
    try:
        with single_threaded():
            converged = bool(optimizer.run(fmax=fmax, steps=steps))
            energy = float(atoms.get_potential_energy())
    except ScoringError:
        raise
    except Exception as exc:
        raise ScoringError(f"relaxation with {mlip.label} failed: {type(exc).__name__}: {exc}") from exc
    positions = atoms.get_positions()
    if not (math.isfinite(energy) and np.all(np.isfinite(positions)) and np.all(np.isfinite(atoms.cell.array))):
        raise ScoringError(f"relaxation with {mlip.label} diverged (non-finite energy or positions)")
    relaxed = Structure(Lattice(atoms.cell.array), structure.species, positions, coords_are_cartesian=True,
                        site_properties=structure.site_properties or None, properties=dict(structure.properties))
    return RelaxResult(relaxed, energy, energy / len(relaxed), int(optimizer.nsteps), converged)


# ---------------------------------------------------------------- batched FIRE

FIRE_PARAMETERS = {"dt": 0.1, "maxstep": 0.2, "dtmax": 1.0, "nmin": 5, "finc": 1.1, "fdec": 0.5, "astart": 0.1, "fa": 0.99}
"""ASE's FIRE defaults (``ase.optimize.FIRE``): time step, largest move per step (Å), ..., as ASE names them."""


def _voigt_to_3x3(stress: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = stress
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _expm_frechet_adjoint(u: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of the energy with respect to the log-deformation ``u`` given the gradient ``g`` with respect
    to the deformation exp(u), for a stack (B, 3, 3): the Fréchet derivative L(uᵀ, g), read off the
    upper-right block of exp([[uᵀ, g], [0, uᵀ]]) (one batched exponential instead of ASE's nine
    ``expm_frechet`` calls per structure: Σ_ij L(u, E_mn)_ij g_ij = L(uᵀ, g)_mn)."""
    from scipy.linalg import expm

    block = np.zeros((len(u), 6, 6))
    ut = np.transpose(u, (0, 2, 1))
    block[:, :3, :3] = ut
    block[:, 3:, 3:] = ut
    block[:, :3, 3:] = g
    return expm(block)[:, :3, 3:]


class _FireState:
    """One structure's FIRE on the FrechetCellFilter degrees of freedom (ASE's semantics).

    Degrees of freedom: atom positions in the undeformed cell (Å) and, with ``relax_cell``, the
    matrix log of the deformation gradient F times the number of atoms (ASE's ``exp_cell_factor``);
    the cell is ``orig_cell @ Fᵀ`` and the positions ``x @ Fᵀ``. Forces on the cell variables are the
    virial (−V σ) pulled back through F and through the exponential, divided by the number of atoms,
    so the convergence test ``max row norm < fmax`` and every FIRE step match ASE's FIRE on
    ``FrechetCellFilter(atoms)``.
    """

    def __init__(self, structure: Structure, relax_cell: bool) -> None:
        self.structure = structure
        self.n = len(structure)
        self.relax_cell = relax_cell
        self.orig_cell = np.array(structure.lattice.matrix, dtype=float)
        self.x = np.array(structure.cart_coords, dtype=float)   # positions in the undeformed cell
        self.u = np.zeros((3, 3))                               # log of the deformation gradient
        self.f_def = np.eye(3)
        self.vel: np.ndarray | None = None
        p = FIRE_PARAMETERS
        self.dt, self.a, self.fire_count = p["dt"], p["astart"], 0
        self.steps = 0
        self.energy = math.nan
        self.forces: np.ndarray | None = None    # (n [+3], 3) generalised forces
        self.done = False
        self.converged = False
        self.error: BaseException | None = None

    @property
    def cell(self) -> np.ndarray:
        return self.orig_cell @ self.f_def.T

    def current(self) -> Structure:
        """The structure at the current degrees of freedom (plain elements: what the model sees)."""
        return Structure(Lattice(self.cell), [sp.symbol for sp in self.structure.species], self.x @ self.f_def.T,
                         coords_are_cartesian=True)

    def atom_forces(self, forces: np.ndarray) -> np.ndarray:
        return forces @ self.f_def if self.relax_cell else forces

    def cell_gradient(self, stress: np.ndarray) -> np.ndarray:
        """Virial pulled back through F: −dE/dF (eV), before the exponential's Jacobian."""
        volume = abs(float(np.linalg.det(self.cell)))
        virial = -volume * _voigt_to_3x3(stress)
        return virial @ np.linalg.inv(self.f_def.T)

    def dofs(self) -> np.ndarray:
        return np.vstack([self.x, self.n * self.u]) if self.relax_cell else self.x

    def set_dofs(self, new: np.ndarray) -> None:
        self.x = new[:self.n]
        if self.relax_cell:
            self.u = new[self.n:] / self.n

    def fire_step(self) -> None:
        """One ``ase.optimize.FIRE.step`` with the forces of the current point."""
        p = FIRE_PARAMETERS
        force = self.forces.ravel()
        if self.vel is None:
            self.vel = np.zeros_like(force)
        else:
            vf = float(np.vdot(force, self.vel))
            if vf > 0.0:
                self.vel = (1.0 - self.a) * self.vel + self.a * force / np.sqrt(np.vdot(force, force)) * np.sqrt(
                    np.vdot(self.vel, self.vel))
                if self.fire_count > p["nmin"]:
                    self.dt = min(self.dt * p["finc"], p["dtmax"])
                    self.a *= p["fa"]
                self.fire_count += 1
            else:
                self.vel[:] *= 0.0
                self.a = p["astart"]
                self.dt *= p["fdec"]
                self.fire_count = 0
        self.vel += self.dt * force
        dr = self.dt * self.vel
        norm = float(np.sqrt(np.vdot(dr, dr)))
        if norm > p["maxstep"]:
            dr = p["maxstep"] * dr / norm
        self.set_dofs(self.dofs() + dr.reshape(-1, 3))

    def result(self) -> RelaxResult:
        relaxed = Structure(Lattice(self.cell), self.structure.species, self.x @ self.f_def.T, coords_are_cartesian=True,
                            site_properties=self.structure.site_properties or None,
                            properties=dict(self.structure.properties))
        return RelaxResult(relaxed, float(self.energy), float(self.energy) / self.n, int(self.steps), bool(self.converged))


def relax_many(structures: Sequence[Structure], mlip, fmax: float = DEFAULT_FMAX, steps: int = DEFAULT_STEPS,
               relax_cell: bool | Sequence[bool] = True,
               progress: Callable[[int, int], None] | None = None,
               max_group_atoms: int = MAX_GROUP_ATOMS) -> list[RelaxResult | Exception]:
    """Relax many structures together: ASE's FIRE on a FrechetCellFilter for each, with one batched
    ``mlip.predict`` (energy, forces, stress) per group of unfinished structures per step.

    Speed (``bench/relax.md``): a step's unfinished structures go to the model in consecutive groups of
    at most ``max_group_atoms`` atoms (a structure larger than that alone); only the starting points
    go through the model's input screen (``check``), later steps through ``predict_prescreened`` where the
    model has it, with neighbour lists that are not memoised (``core.neighbors.unmemoised``); numpy and
    torch run on one thread each (``single_threaded``).

    Each structure keeps its own FIRE state, cell filter, step count and convergence test, so the
    trajectories are those of ``relax`` one structure at a time (final energies agree within
    1e-3 eV/atom, ``bench/relax.md``); only the model calls are shared.

    Args:
        structures: starting crystals.
        mlip: an MLIP with a batched ``predict(structures, forces=True)`` (``core.scoring.mlip``).
        fmax: force convergence threshold, eV/Å (cell "forces" as FrechetCellFilter scales them).
        steps: most FIRE steps per structure.
        relax_cell: also relax the lattice; one value for all or one per structure.
        progress: called as ``progress(finished, total)`` after each step.
        max_group_atoms: most atoms per model call (``MAX_GROUP_ATOMS``); grouping changes no trajectory
            beyond the float32 rounding of a differently batched graph.

    Returns:
        Per structure, in order, a ``RelaxResult`` or the ``ScoringError`` it ran into (screened out by the
        model, non-finite energy, failed evaluation); one failure never stops the others.
    """
    if fmax <= 0 or steps < 0:
        raise ValueError(f"need fmax > 0 and steps >= 0 (got fmax={fmax}, steps={steps})")
    if max_group_atoms < 1:
        raise ValueError(f"need max_group_atoms >= 1 (got {max_group_atoms})")
    flags = [relax_cell] * len(structures) if isinstance(relax_cell, bool) else list(relax_cell)
    if len(flags) != len(structures):
        raise ValueError(f"relax_cell has {len(flags)} values for {len(structures)} structures")
    states = [_FireState(s, bool(flag)) for s, flag in zip(structures, flags)]
    label = getattr(mlip, "label", getattr(mlip, "name", "MLIP"))
    from core.neighbors import unmemoised

    first = _with_forces(mlip.predict)
    later = _with_forces(getattr(mlip, "predict_prescreened", mlip.predict))
    with single_threaded():
        for group in _groups(states, max_group_atoms):
            _evaluate(group, first, fmax, steps, label)
        while True:
            active = [s for s in states if not s.done]
            if progress is not None:
                progress(len(states) - len(active), len(states))
            if not active:
                break
            for state in active:
                state.fire_step()
                state.steps += 1
            with unmemoised():
                for group in _groups(active, max_group_atoms):
                    _evaluate(group, later, fmax, steps, label)
    return [s.error if s.error is not None else s.result() for s in states]


def _groups(states: list[_FireState], max_atoms: int) -> list[list[_FireState]]:
    """``states`` in order, cut into consecutive groups of at most ``max_atoms`` atoms (a larger one alone)."""
    groups: list[list[_FireState]] = []
    atoms = 0
    for state in states:
        if not groups or atoms + state.n > max_atoms:
            groups.append([])
            atoms = 0
        groups[-1].append(state)
        atoms += state.n
    return groups


def _with_forces(predict: Callable[..., list]) -> Callable[[list[Structure]], list]:
    """``predict`` asked for forces and stress where it takes the ``forces`` switch (all backends do;
    simple doubles may always return them)."""
    import functools
    import inspect

    try:
        takes = "forces" in inspect.signature(predict).parameters
    except (TypeError, ValueError):
        takes = False
    return functools.partial(predict, forces=True) if takes else predict


def _evaluate(states: list[_FireState], predict: Callable[[list[Structure]], list], fmax: float, steps: int,
              label: str) -> None:
    """Energies, forces and stresses of ``states`` in one ``predict`` call; then each one's generalised forces
    and convergence test (ASE: converged when max row norm < fmax; stop at ``steps``)."""
    from scipy.linalg import expm

    cells = [s for s in states if s.relax_cell]
    if cells:
        for state, f_def in zip(cells, expm(np.array([s.u for s in cells]))):
            state.f_def = f_def
    try:
        results = list(predict([s.current() for s in states]))
    except Exception as exc:  # noqa: BLE001 - predict isolates failures itself; this is a last resort
        results = [exc] * len(states)
    good = []
    for state, result in zip(states, results):
        if isinstance(result, BaseException) or not (math.isfinite(result.energy_ev) and np.all(np.isfinite(result.forces))):
            reason = result if isinstance(result, BaseException) else "non-finite energy or forces"
            state.error = ScoringError(f"relaxation with {label} failed at step {state.steps}: {reason}")
            state.done = True
            continue
        state.energy = float(result.energy_ev)
        state.forces = state.atom_forces(np.asarray(result.forces, dtype=float))
        good.append((state, result))
    with_cell = [(s, r) for s, r in good if s.relax_cell]
    if with_cell:
        gradients = np.array([s.cell_gradient(np.asarray(r.stress, dtype=float)) for s, r in with_cell])
        cell_forces = _expm_frechet_adjoint(np.array([s.u for s, _ in with_cell]), gradients)
        for (state, _), force in zip(with_cell, cell_forces):
            state.forces = np.vstack([state.forces, force / state.n])
    for state, _ in good:
        if float(np.linalg.norm(state.forces, axis=1).max()) < fmax:
            state.done = state.converged = True
        elif state.steps >= steps:
            state.done = True
