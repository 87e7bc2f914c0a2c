"""Which torch device the scorers run on.

``pick_torch_device()`` returns ``"cuda"`` when a GPU is visible and ``"cpu"`` otherwise. A caller
overrides it with an argument, a user with the environment variable ``CFRL_TORCH_DEVICE``
(e.g. ``cpu`` to keep a shared GPU free, or ``cuda:1``).
"""
from __future__ import annotations

import os

from core.errors import InvalidInputError

DEVICE_ENV = "CFRL_TORCH_DEVICE"


def pick_torch_device(device: str | None = None) -> str:
    """Return the torch device string to use: ``device`` if given, else ``$CFRL_TORCH_DEVICE``, else auto.

    Raises:
        InvalidInputError: a CUDA device was requested but torch sees no GPU, or the name is not a
            torch device.
    """
    import torch

    choice = (device or os.environ.get(DEVICE_ENV) or "").strip()
    if not choice or choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(choice)
    except (RuntimeError, ValueError) as exc:
        raise InvalidInputError(f"unknown torch device {choice!r} (use 'cpu', 'cuda' or 'cuda:N')") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"torch device {choice!r} requested but no CUDA GPU is available; use 'cpu'")
    return str(parsed)
