"""CHGNet (weights ship in the ``chgnet`` wheel) as an MLIP.

Energy scale ``"mp2020"``: CHGNet 0.3.0 was trained on MPtrj's MP2020-*corrected* energies, so its
predictions already contain the anion and GGA/GGA+U corrections (checked against 25 MP GGA+U
oxides: MAE 0.045 eV/atom to the corrected, 0.96 eV/atom to the raw energies). It therefore gets
``mp_compatible=False``: correcting it again would count the corrections twice. Batched ``predict``
uses CHGNet's own graph batching; CHGNet returns energy per atom and stress in GPa, converted here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pymatgen.core import Element, Structure

from core.scoring.mlip import GPA_PER_EV_A3, BatchedMLIP, stress_3x3_to_voigt

CHGNET_MAX_Z = 94  # CHGNet's atom embedding and composition model cover H..Pu


class CHGNetMLIP(BatchedMLIP):
    """CHGNet universal potential (energy eV, forces eV/Å, stress eV/Å³)."""

    name = "chgnet"
    mp_compatible = False
    energy_scale = "mp2020"
    batch_size = 16

    def __init__(self, device: str, model_name: str = "0.3.0") -> None:
        from chgnet.model import CHGNet

        self.device = device
        self.model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
        self.model.eval()
        self.label = f"CHGNet-{model_name}"
        self.elements = frozenset(Element.from_Z(z).symbol for z in range(1, CHGNET_MAX_Z + 1))
        self.cutoff_a = float(self.model.graph_converter.atom_graph_cutoff)

    def calculator(self):
        import contextlib
        import io

        from ase import units
        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu" on every call
            return CHGNetCalculator(model=self.model, use_device=self.device, stress_weight=units.GPa,
                                    on_isolated_atoms="error")

    def _predict_batch(self, structures: list[Structure], forces: bool) -> list[tuple[float, Any, Any]]:
        predictions = self.model.predict_structure(list(structures), task="efs" if forces else "e",
                                                   batch_size=len(structures))
        if isinstance(predictions, dict):
            predictions = [predictions]
        out = []
        for structure, p in zip(structures, predictions):
            energy = float(p["e"]) * len(structure)  # CHGNet predicts eV/atom
            if not forces:
                out.append((energy, None, None))
                continue
            stress = stress_3x3_to_voigt(np.asarray(p["s"], dtype=float).reshape(3, 3)) / GPA_PER_EV_A3
            out.append((energy, np.asarray(p["f"], dtype=float), stress))
        return out


def chgnet(device: str, **kw) -> CHGNetMLIP:
    """CHGNet 0.3.0 (MPtrj); ``model_name`` picks another version shipped in the wheel."""
    return CHGNetMLIP(device, **kw)
