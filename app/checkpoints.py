"""Which CrystalFormer checkpoints the app can offer.

Shipped ones live in ``core.settings.checkpoints_dir()`` (``checkpoints/`` or $CFRL_CHECKPOINTS_DIR),
checkpoints made in the Fine-tune page in ``<app data dir>/checkpoints``. A checkpoint is any folder
there holding ``params.npz`` (ours) or a ``*.pkl`` file (official CrystalFormer format); users can
also type the path of any checkpoint, with an optional config JSON for official pickles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core import settings

SHIPPED_ORDER = ("base", "rl-ehull", "rl-fom")   # listed first, in this order, when present
OTHER_MODELS = frozenset({"dielectric"})         # folders of checkpoints/ that hold property models


@dataclass(frozen=True)
class CheckpointRef:
    """Where a checkpoint is. ``config`` is a JSON path for official pickles (None: the paper's config)."""

    name: str
    path: str
    origin: str = "shipped"      # "shipped" | "fine-tuned" | "path"
    config: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.origin == "shipped" else f"{self.name} ({self.origin})"


def finetuned_dir() -> Path:
    """Where the Fine-tune page writes new checkpoints."""
    path = settings.app_data_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_checkpoint_dir(folder: Path) -> bool:
    """A CrystalFormer checkpoint folder: params.npz with a CrystalFormer config.json, or an official .pkl."""
    if not folder.is_dir() or folder.name in OTHER_MODELS:
        return False
    if (folder / "params.npz").exists():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and "wyck_types" in config
    return any(folder.glob("*.pkl")) and not (folder / "model.json").exists()


def _scan(root: Path, origin: str) -> list[CheckpointRef]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if is_checkpoint_dir(p)]
    rank = {name: k for k, name in enumerate(SHIPPED_ORDER)}
    found.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    return [CheckpointRef(p.name, str(p), origin) for p in found]


def find_checkpoints() -> list[CheckpointRef]:
    """Shipped checkpoints (base, rl-ehull, rl-fom first) then fine-tuned ones."""
    return _scan(settings.checkpoints_dir(), "shipped") + _scan(finetuned_dir(), "fine-tuned")


def from_path(path: str, config: str | None = None) -> CheckpointRef:
    """A user-typed checkpoint path (folder, params.npz or .pkl) and optional config JSON."""
    p = Path(path.strip()).expanduser()
    name = p.parent.name + "/" + p.stem if p.suffix == ".pkl" else p.name
    return CheckpointRef(name or str(p), str(p), "path", (config or "").strip() or None)


def model_card(ref: CheckpointRef) -> str | None:
    """The checkpoint's MODEL_CARD.md text when it ships one."""
    card = Path(ref.path) / "MODEL_CARD.md"
    return card.read_text() if card.is_file() else None


def describe(checkpoint) -> dict[str, str]:
    """Facts for the sidebar: name, format, parameters, layers, source (a loaded core Checkpoint)."""
    import jax

    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(checkpoint.params))
    cfg = checkpoint.config
    facts = {
        "name": checkpoint.name,
        "format": checkpoint.fmt,
        "parameters": f"{n_params / 1e6:.2f} M" if n_params >= 1e5 else f"{n_params:,}",
        "transformer": f"{cfg.num_layers} layer{'s' * (cfg.num_layers != 1)} × {cfg.num_heads} head{'s' * (cfg.num_heads != 1)}, "
                       f"d_model {cfg.model_size}",
    }
    if checkpoint.meta.get("train_size"):
        facts["training crystals"] = f"{int(checkpoint.meta['train_size']):,}"
    trained = checkpoint.meta.get("trained_on") or checkpoint.meta.get("dataset")
    if trained:
        facts["trained on"] = trained if isinstance(trained, str) else json.dumps(trained)[:60]
    if checkpoint.meta.get("ppo_steps"):
        facts["PPO steps"] = str(checkpoint.meta["ppo_steps"])
    return facts
