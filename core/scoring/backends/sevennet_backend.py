"""SevenNet models (package ``sevenn``) as MLIPs: SevenNet-0, 7net-l3i5 and 7net-mf-0 ship in its wheel;
7net-mf-ompa is a download (``python -m core download 7net-mf-ompa``) read from ``models_dir()/sevennet/``.

Energy scale ``"mp-raw"``: SevenNet-0 was trained on MPtrj's uncorrected PBE/PBE+U energies
(checked against 25 MP GGA+U oxides: MAE 0.022 eV/atom to the raw, 0.97 eV/atom to the
MP2020-corrected energies), so it is ``mp_compatible`` and the hull applies MP2020. Batched
``predict`` collates sevenn graphs into one batch; the ASE calculator uses a second model instance
because sevenn switches a model between batched and single-graph mode globally.

Multi-fidelity checkpoints need a *modal* (the training set whose energies they reproduce):
7net-mf-0 is run with ``"PBE"`` (its MPtrj head: raw PBE/PBE+U energies as MP computes them, so MP2020
applies; its other head, ``"R2SCAN"``, is on the r2SCAN scale no DFT hull here uses) and 7net-mf-ompa
with ``"mpa"`` (MPtrj + sAlex, MP-compatible settings; ``"omat24"`` is OMat24's scale).
"""
from __future__ import annotations

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from core.scoring.mlip import BatchedMLIP
from core.settings import models_dir, require

SEVENNET_CHECKPOINT = "7net-0"  # sevenn's name for SevenNet-0 (11Jul2024), shipped in the wheel
MF_OMPA_FILE = "checkpoint_sevennet_mf_ompa.pth"  # download-only (catalogue entry 7net-mf-ompa)


class SevenNetMLIP(BatchedMLIP):
    """SevenNet-0 universal potential (energy eV, forces eV/Å, stress eV/Å³)."""

    name = "sevennet"
    mp_compatible = True
    energy_scale = "mp-raw"
    label = "SevenNet-0 (11Jul2024)"

    def __init__(self, device: str, checkpoint: str = SEVENNET_CHECKPOINT, modal: str | None = None,
                 name: str | None = None, label: str | None = None) -> None:
        import sevenn._keys as KEY
        from sevenn.util import load_checkpoint

        self.device = device
        self.checkpoint = load_checkpoint(checkpoint)
        self.model = self._build()
        self.model.set_is_batch_data(True)
        self.modal = modal
        modals = sorted(getattr(self.model, "modal_map", None) or {})
        if modals and modal not in modals:
            raise ValueError(f"{checkpoint} is multi-fidelity: pass modal= one of {', '.join(modals)}")
        self.name, self.label = name or self.name, label or self.label
        self.cutoff_a = float(self.checkpoint.config[KEY.CUTOFF])
        self.elements = frozenset(Element.from_Z(int(z)).symbol for z in self.model.type_map)
        self._calc_model = None

    def _build(self):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no tensor-product accelerator" notice
            model = self.checkpoint.build_model()
        return model.to(self.device).eval()

    def calculator(self):
        from sevenn.calculator import SevenNetCalculator

        if self._calc_model is None:
            self._calc_model = self._build()
        return SevenNetCalculator(model=self._calc_model, file_type="model_instance", device=self.device,
                                  modal=self.modal)

    def _predict_batch(self, structures: list[Structure], forces: bool) -> list[tuple[float, np.ndarray, np.ndarray]]:
        # the model computes forces and stress in the same pass either way; they are returned regardless
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.data import Batch

        graphs = [AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(AseAtomsAdaptor.get_atoms(s), self.cutoff_a))
                  for s in structures]
        if self.modal:
            for graph in graphs:
                graph[KEY.DATA_MODALITY] = self.modal
        batch = Batch.from_data_list(graphs).to(self.device)
        output = self.model(batch)
        energies = output[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().reshape(-1)
        forces = output[KEY.PRED_FORCE].detach().cpu().numpy()
        # sevenn's stress order is xx yy zz xy yz zx with the opposite sign to ASE
        stress = -output[KEY.PRED_STRESS].detach().cpu().numpy().reshape(-1, 6)[:, [0, 1, 2, 4, 5, 3]]
        splits = np.cumsum([len(s) for s in structures])[:-1]
        return list(zip(energies.astype(float).tolist(), np.split(forces.astype(float), splits), stress))


def sevennet(device: str, **kw) -> SevenNetMLIP:
    """SevenNet-0 (11Jul2024) from the sevenn wheel; ``checkpoint`` picks another sevenn checkpoint."""
    return SevenNetMLIP(device, **kw)


def sevennet_l3i5(device: str) -> SevenNetMLIP:
    """7net-l3i5 (MPtrj, l_max 3; shipped in the wheel): raw MP PBE/PBE+U energies, MP2020 applies."""
    return SevenNetMLIP(device, "7net-l3i5", name="sevennet-l3i5", label="7net-l3i5 (MPtrj)")


def sevennet_mf_0(device: str) -> SevenNetMLIP:
    """7net-mf-0 (shipped in the wheel) on its PBE head: MPtrj's raw PBE/PBE+U scale, MP2020 applies."""
    return SevenNetMLIP(device, "7net-mf-0", modal="PBE", name="sevennet-mf-0", label="7net-mf-0 (PBE modal)")


def sevennet_mf_ompa(device: str, weights: str | None = None) -> SevenNetMLIP:
    """7net-mf-ompa from its downloaded checkpoint, on its ``mpa`` head (MPtrj + sAlex, MP scale).

    Raises:
        MissingResourceError: the checkpoint is not in ``models_dir()/sevennet/`` (nor at ``weights``).
    """
    path = require(weights or models_dir() / "sevennet" / MF_OMPA_FILE, "7net-mf-ompa weights",
                   "Run `python -m core download 7net-mf-ompa` (or the Models page), or put "
                   f"{MF_OMPA_FILE} in {models_dir() / 'sevennet'}.")
    return SevenNetMLIP(device, str(path), modal="mpa", name="sevennet-mf-ompa", label="7net-mf-ompa (mpa modal)")
