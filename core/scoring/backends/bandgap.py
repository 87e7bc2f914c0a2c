"""Band gap (eV) from MEGNet-MP-2019.4.1-BandGap-mfi at PBE fidelity, as the CrystalFormer-RL paper uses it.

The multi-fidelity MEGNet takes the fidelity as graph state: 0 = PBE, 1 = GLLB-SC, 2 = HSE, 3 = SCAN.
The paper's reward uses PBE (validation MAE 0.314 eV on MP). Loaded through ``legacy_matgl`` (the
checkpoint predates matgl 3.0: NaCl gives the published 5.031 eV, not matgl 4.x's 4.585 eV). Metals
come out near 0 and can be slightly negative; values are returned as the model gives them.
"""
from __future__ import annotations

import threading
from pathlib import Path

from core.scoring.backends.matgl_property import MatglPropertyModel
from core.scoring.device import pick_torch_device

BANDGAP_MODEL = "MEGNet-MP-2019.4.1-BandGap-mfi"
FIDELITIES = {"PBE": 0, "GLLB-SC": 1, "HSE": 2, "SCAN": 3}


class BandGapModel(MatglPropertyModel):
    """``predict(structures) -> list[float | Exception]``: band gap in eV at one fidelity (default PBE)."""

    def __init__(self, device: str | None = None, path: str | Path | None = None, fidelity: str = "PBE",
                 batch_size: int = 64) -> None:
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, not {fidelity!r}")
        self.fidelity = fidelity
        super().__init__(path or BANDGAP_MODEL, device=device, state=FIDELITIES[fidelity],
                         label=f"{BANDGAP_MODEL} ({fidelity})", batch_size=batch_size)


_CACHE: dict[tuple[str, str], BandGapModel] = {}
_LOCK = threading.Lock()


def load_bandgap_model(device: str | None = None, fidelity: str = "PBE") -> BandGapModel:
    """The band-gap model, loaded once per (device, fidelity)."""
    key = (pick_torch_device(device), fidelity)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = BandGapModel(device=key[0], fidelity=fidelity)
        return _CACHE[key]
