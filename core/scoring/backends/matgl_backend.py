"""matgl potentials (M3GNet, TensorNet) loaded through ``legacy_matgl`` so they give their published numbers.

Batched ``predict`` turns the structures into one batch of matgl PyG graphs (``matgl_graphs``) and evaluates energy, forces (−dE/dx) and stress (dE/dε / V) in one pass.
Energy corrections: M3GNet-MP-2021.2.8-PES predicts raw MP PBE/PBE+U energies (MP2020 applies);
the two MatPES models predict MatPES-PBE energies (no correction; not on MP's GGA+U scale).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from core.scoring.backends.matgl_graphs import graph_batch
from core.scoring.backends.legacy_matgl import load_matgl
from core.scoring.mlip import GPA_PER_EV_A3, BatchedMLIP, stress_3x3_to_voigt


class MatglPES(BatchedMLIP):
    """A matgl ``Potential`` (energy, forces, stress) as an MLIP."""

    def __init__(self, name: str, label: str, energy_scale: str, device: str, **load_kw) -> None:
        self.name, self.label, self.energy_scale, self.device = name, label, energy_scale, device
        self.mp_compatible = energy_scale == "mp-raw"
        self.potential = load_matgl(label, device=device, **load_kw)
        self.potential.calc_forces = True
        self.potential.calc_stresses = True
        model = self.potential.model
        self.elements = frozenset(model.element_types)
        self.cutoff_a = float(model.cutoff)
        self._element_types = tuple(model.element_types)

    def calculator(self):
        from matgl.ext.ase import PESCalculator

        return PESCalculator(self.potential, stress_unit="eV/A3", use_voigt=True)

    def _line_graph(self, batch: Any, lattice: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """M3GNet's three-body line graph (pairs of bonds ≤ ``threebody_cutoff`` Å sharing an atom), built
        with tensor operations; None for models without three-body terms.

        Left to itself M3GNet builds it with a Python loop over the atoms of the batch (0.5 ms a
        structure, an eighth of its time here). Bond lengths are computed with the operations
        ``Potential.forward`` uses, bit for bit, so M3GNet accepts the bonds this graph keeps.
        """
        cutoff = getattr(self.potential.model, "threebody_cutoff", None)
        if cutoff is None:
            return None
        from matgl.graph._compute import compute_pair_vector_and_distance, create_line_graph_torch

        with torch.no_grad():
            pos = (batch.frac_coords.unsqueeze(-1) * lattice[batch.batch]).sum(dim=1)
            shift = (batch.pbc_offset.unsqueeze(-1) * lattice[batch.batch[batch.edge_index[0]]]).sum(dim=1)
            bond_vec, bond_dist = compute_pair_vector_and_distance(pos, batch.edge_index, shift)
            return create_line_graph_torch(batch.edge_index, bond_dist, bond_vec, pos.size(0), float(cutoff))

    def _predict_batch(self, structures: list[Structure], forces: bool) -> list[tuple[float, Any, Any]]:
        batch, lattice = graph_batch(structures, self._element_types, self.cutoff_a)
        batch, lattice = batch.to(self.device), lattice.to(self.device)
        self.potential.calc_forces = self.potential.calc_stresses = forces  # False: no backward pass
        try:
            if forces:
                energies, force_out, stresses, _ = self.potential(batch, lattice, l_g=self._line_graph(batch, lattice))
            else:
                with torch.inference_mode():  # no autograd bookkeeping when no gradient is wanted
                    energies, force_out, stresses, _ = self.potential(batch, lattice,
                                                                      l_g=self._line_graph(batch, lattice))
        finally:
            self.potential.calc_forces = self.potential.calc_stresses = True
        energies = energies.detach().reshape(-1).cpu().numpy().astype(float).tolist()
        if not forces:
            return [(e, None, None) for e in energies]
        force_out = force_out.detach().cpu().numpy().astype(float)
        stress = stress_3x3_to_voigt(stresses.detach().cpu().numpy().reshape(-1, 3, 3)) / GPA_PER_EV_A3
        splits = np.cumsum([len(s) for s in structures])[:-1]
        return list(zip(energies, np.split(force_out, splits), stress))


def m3gnet_mp(device: str, **kw) -> MatglPES:
    """M3GNet-MP-2021.2.8-PES: MP relaxation trajectories 2021; raw MP energies (mp_compatible)."""
    return MatglPES("m3gnet", "M3GNet-MP-2021.2.8-PES", "mp-raw", device, **kw)


def m3gnet_matpes(device: str, **kw) -> MatglPES:
    """M3GNet-MatPES-PBE-v2025.1-PES: MatPES PBE energies (no MP2020 correction)."""
    return MatglPES("m3gnet-matpes", "M3GNet-MatPES-PBE-v2025.1-PES", "matpes-pbe", device, **kw)


def tensornet_matpes(device: str, **kw) -> MatglPES:
    """TensorNet-MatPES-PBE-v2025.1-PES: MatPES PBE energies (no MP2020 correction)."""
    return MatglPES("tensornet-matpes", "TensorNet-MatPES-PBE-v2025.1-PES", "matpes-pbe", device, **kw)
