"""Relax a structure (atoms and cell) with an MLIP: ASE FIRE on a FrechetCellFilter.

Converged means the largest force, and the largest stress component scaled by the cell volume as
``FrechetCellFilter`` does it, fell below ``fmax`` (eV/Å) within ``steps`` optimiser steps. The relaxed
structure keeps the input's species (with any oxidation states) and site properties.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError

DEFAULT_FMAX = 0.1   # eV/Å
DEFAULT_STEPS = 500


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
        with one_blas_thread():
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
