"""The one object that holds a CrystalFormer's hyperparameters (the paper's Table S1)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidInputError

# The reference implementation's command-line names where they differ from ours.
_REFERENCE_NAMES = {"transformer_layers": "num_layers", "attn_rate": "attn_dropout", "attn_dropout_rate": "attn_dropout"}


@dataclass(frozen=True)
class ModelConfig:
    """CrystalFormer hyperparameters. Defaults are the paper's (4,833,575 parameters).

    Sequence: space group, then ``n_max`` sites of (Wyckoff letter, element, x, y, z), then the lattice.
    """

    Nf: int = 5                # Fourier frequencies for fractional coordinates
    Kx: int = 16               # von Mises mixture components per coordinate
    Kl: int = 4                # Gaussian mixture components for the lattice
    h0_size: int = 256         # hidden size of the MLP giving the first Wyckoff letter (0: a table)
    num_layers: int = 16
    num_heads: int = 16
    key_size: int = 64
    model_size: int = 64
    embed_size: int = 32
    dropout_rate: float = 0.1  # residual dropout in training
    attn_dropout: float = 0.1  # attention-weight dropout in training
    n_max: int = 21            # sites (symmetry-inequivalent) incl. at least one padding site
    atom_types: int = 119      # 0 = padding, then H (1) … Og (118)
    wyck_types: int = 28       # 0 = padding, then a … z, A
    widening_factor: int = 4   # MLP width = widening_factor * model_size
    sigmamin: float = 1e-3     # floor of the lattice Gaussians' widths

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(v, int) or v < 0):
                raise InvalidInputError(f"config: {f.name} must be a non-negative integer, got {v!r}")
        if self.key_size % 2:
            raise InvalidInputError("config: key_size must be even (rotary position encoding)")
        if self.n_max < 2 or self.atom_types < 2 or self.wyck_types < 2:
            raise InvalidInputError("config: n_max, atom_types and wyck_types must be at least 2")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def coord_types(self) -> int:
        return 3 * self.Kx

    @property
    def lattice_types(self) -> int:
        return self.Kl + 2 * 6 * self.Kl

    @property
    def output_size(self) -> int:
        return max(self.atom_types + self.lattice_types, self.coord_types, self.wyck_types)

    @property
    def seq_len(self) -> int:
        """Tokens the attention stack sees: 5 per site."""
        return 5 * self.n_max

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build from our JSON, or from the reference's argument names (``transformer_layers`` …).

        Also accepts the fixtures' ``config.json`` layout (``{"cli_args": {...}, "widening_factor": …}``).
        Unknown keys are ignored (the reference's CLI has many training options).
        """
        flat: dict[str, Any] = {}
        if isinstance(data.get("cli_args"), dict):
            flat.update(data["cli_args"])
        flat.update({k: v for k, v in data.items() if k != "cli_args"})
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in flat.items():
            key = _REFERENCE_NAMES.get(key, key)
            if key in names and value is not None and not isinstance(value, (dict, list)):
                kwargs[key] = float(value) if names[key].type == "float" else int(value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read model config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"model config {path} must be a JSON object")
        return cls.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


PAPER = ModelConfig()
