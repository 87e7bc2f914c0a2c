"""Orb (package ``orb-models``), the paper's reward MLIP. Its weights are not shipped: give a file.

The paper (CrystalFormer-RL, appendix) scores with Orb-v2 trained on MPtrj + Alexandria and applies
``MaterialsProject2020Compatibility`` to its energies: energy scale ``"mp-raw"``, ``mp_compatible``.
The orb-v3 "mpa" variants are on the same scale; the "omat" variants (OMat24 settings) are not.

Weights are looked up, in order, in the ``weights`` argument, the environment variable
``CFRL_ORB_WEIGHTS`` and ``models_dir()/orb/<checkpoint file>``; a missing file raises
MissingResourceError with the download URL. Batched ``predict`` merges orb ``AtomGraphs`` with
``batch_graphs`` and calls the model once; forces and stress are the direct heads for orb-v2 and
the energy gradients for the conservative orb-v3 models.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from core.errors import CheckpointError, InvalidInputError
from core.scoring.mlip import BatchedMLIP
from core.settings import models_dir, require

WEIGHTS_ENV = "CFRL_ORB_WEIGHTS"
ORB_URL = "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
# MPtrj / Alexandria cover H..Pu except Po, At, Rn, Fr, Ra
TRAINED_ELEMENTS = frozenset(Element.from_Z(z).symbol for z in range(1, 95)) - {"Po", "At", "Rn", "Fr", "Ra"}


@dataclass(frozen=True)
class OrbVariant:
    """One published Orb checkpoint: file name, architecture and energy scale."""

    file: str
    architecture: str  # "v2" (direct forces/stress) or "v3-conservative" (gradients)
    max_neighbors: int
    energy_scale: str

    @property
    def url(self) -> str:
        return ORB_URL + ("orb-v3/" if self.architecture.startswith("v3") else "") + self.file


ORB_VARIANTS: dict[str, OrbVariant] = {
    "orb-v2": OrbVariant("orb-v2-20241011.ckpt", "v2", 20, "mp-raw"),
    "orb-v3-conservative-inf-mpa": OrbVariant("orb-v3-conservative-inf-mpa-20250404.ckpt", "v3-conservative", 120, "mp-raw"),
    "orb-v3-conservative-20-mpa": OrbVariant("orb-v3-conservative-20-mpa-20250404.ckpt", "v3-conservative", 20, "mp-raw"),
    "orb-v3-conservative-inf-omat": OrbVariant("orb-v3-conservative-inf-omat-20250404.ckpt", "v3-conservative", 120, "omat24"),
}
DEFAULT_VARIANT = "orb-v2"


def build_orb_architecture(variant: str = DEFAULT_VARIANT, device: str = "cpu", **arch_kw):
    """An Orb model of ``variant``'s architecture with random weights (``arch_kw`` e.g. num_message_passing_steps)."""
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig

    spec = _variant(variant)
    config = SystemConfig(radius=6.0, max_num_neighbors=spec.max_neighbors)
    build = pretrained.orb_v2_architecture if spec.architecture == "v2" else pretrained.orb_v3_conservative_architecture
    return build(device=device, system_config=config, **arch_kw)


def orb_weights_path(variant: str = DEFAULT_VARIANT, weights: str | os.PathLike | None = None) -> Path:
    """Where the weights of ``variant`` are: argument, ``$CFRL_ORB_WEIGHTS`` or ``models_dir()/orb/<file>``.

    Raises:
        MissingResourceError: naming the file and the URL to download it from.
    """
    spec = _variant(variant)
    path = Path(weights or os.environ.get(WEIGHTS_ENV) or models_dir() / "orb" / spec.file).expanduser()
    how = (f"Download {spec.url} (orb-v3 conservative: {ORB_VARIANTS['orb-v3-conservative-inf-mpa'].url}) and pass "
           f"weights=PATH, set {WEIGHTS_ENV}=PATH, or put it at {models_dir() / 'orb' / spec.file}.")
    return require(path, f"Orb weights ({variant})", how)


class OrbMLIP(BatchedMLIP):
    """An Orb force field (energy eV, forces eV/Å, stress eV/Å³)."""

    name = "orb"
    batch_size = 16

    def __init__(self, model, device: str, variant: str = DEFAULT_VARIANT, source: str = "random weights") -> None:
        spec = _variant(variant)
        self.device, self.variant = device, variant
        self.model = model.to(device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.energy_scale = spec.energy_scale
        self.mp_compatible = spec.energy_scale == "mp-raw"
        self.label = f"{variant} ({source})"
        self.elements = TRAINED_ELEMENTS
        self.cutoff_a = float(self.model.system_config.radius)
        conservative = hasattr(self.model, "grad_forces_name")
        self._forces_key = self.model.grad_forces_name if conservative else "forces"
        self._stress_key = self.model.grad_stress_name if conservative else "stress"

    def calculator(self):
        from orb_models.forcefield.calculator import ORBCalculator

        return ORBCalculator(self.model, device=self.device)

    def _predict_batch(self, structures: list[Structure], forces: bool) -> list[tuple[float, np.ndarray, np.ndarray]]:
        # the model computes forces and stress in the same pass either way; they are returned regardless
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs
        from orb_models.forcefield.base import batch_graphs

        graphs = [ase_atoms_to_atom_graphs(AseAtomsAdaptor.get_atoms(s), self.model.system_config, device=self.device)
                  for s in structures]
        out = self.model.predict(batch_graphs(graphs).to(self.device))
        energies = out["energy"].detach().cpu().numpy().reshape(-1).astype(float)
        forces = out[self._forces_key].detach().cpu().numpy().astype(float)
        stress = out[self._stress_key].detach().cpu().numpy().reshape(-1, 6).astype(float)  # ASE Voigt, eV/Å³
        splits = np.cumsum([len(s) for s in structures])[:-1]
        return list(zip(energies.tolist(), np.split(forces, splits), stress))


def orb(device: str, weights: str | os.PathLike | None = None, variant: str | None = None, model=None) -> OrbMLIP:
    """Orb MLIP from a weights file (default variant orb-v2, as in the paper), or from a built ``model``.

    Args:
        device: torch device.
        weights: checkpoint file; default ``$CFRL_ORB_WEIGHTS`` or ``models_dir()/orb/<file>``.
        variant: one of ``ORB_VARIANTS``; default: guessed from the file name, else orb-v2.
        model: an already-built Orb regressor (e.g. ``build_orb_architecture()`` for tests); skips weights.
    """
    if model is not None:
        return OrbMLIP(model, device, variant or DEFAULT_VARIANT)
    chosen = variant or _variant_from_file(weights or os.environ.get(WEIGHTS_ENV)) or DEFAULT_VARIANT
    path = orb_weights_path(chosen, weights)
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_orb_architecture(chosen, device="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a usable {chosen} checkpoint: {type(exc).__name__}: {exc}") from exc
    return OrbMLIP(model, device, chosen, source=path.name)


def orb_v3(device: str, weights: str | os.PathLike | None = None) -> OrbMLIP:
    """orb-v3-conservative-inf-mpa (MPtrj + Alexandria, MP scale) from its downloaded weights
    (``python -m core download orb-v3-conservative-inf-mpa`` puts them in ``models_dir()/orb/``)."""
    return orb(device, weights=weights, variant="orb-v3-conservative-inf-mpa")


def _variant(variant: str) -> OrbVariant:
    if variant not in ORB_VARIANTS:
        raise InvalidInputError(f"unknown Orb variant {variant!r}; choose one of {', '.join(ORB_VARIANTS)}")
    return ORB_VARIANTS[variant]


def _variant_from_file(weights: str | os.PathLike | None) -> str | None:
    name = Path(weights).name if weights else ""
    return next((key for key, spec in ORB_VARIANTS.items() if name == spec.file), None)
