"""CrystalFormer checkpoints loaded once per server process (``st.cache_resource``).

Keyed by path, config and file modification time, so a checkpoint rewritten by the Fine-tune page is
reloaded while an unchanged one never is. (Scoring models are cached by the core itself:
``load_mlip``, ``load_hull_reference``.)
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.checkpoints import CheckpointRef


def _stamp(path: str) -> float:
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix in (".npz", ".pkl", ".json")]
        return max((f.stat().st_mtime for f in files), default=0.0)
    return p.stat().st_mtime if p.exists() else 0.0


@st.cache_resource(show_spinner=False, max_entries=6)
def _checkpoint(path: str, config: str | None, stamp: float):
    from core.checkpoint import load_checkpoint

    return load_checkpoint(path, config=config)


def load_checkpoint(ref: CheckpointRef):
    """The loaded ``core.checkpoint.Checkpoint`` (raises the core's typed errors)."""
    return _checkpoint(ref.path, ref.config, _stamp(ref.path))
