"""Shared fixtures: the reference-implementation fixtures in ../shared/fixtures/crystalformer."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CFRL_APP_WARMUP", "0")  # AppTests load models only where a test asks (app.scoring.warm_up)

from core import settings  # noqa: E402

FIXTURES = settings.fixtures_dir() / "crystalformer"


def fixture_param_sets() -> list[tuple[str, Path, Path]]:
    """(id, config.json, parameter folder) for every config and parameter set in the fixtures."""
    out = []
    if not FIXTURES.exists():
        return out
    for config_json in sorted(FIXTURES.glob("*/config.json")):
        folder = config_json.parent
        for params in sorted([folder, *[p for p in folder.iterdir() if p.is_dir()]]):
            if (params / "expected.npz").exists() and any(params.glob("*.pkl")):
                out.append((str(params.relative_to(FIXTURES)), config_json, params))
    return out


@pytest.fixture(scope="session")
def fixture_inputs() -> dict[str, np.ndarray]:
    if not (FIXTURES / "inputs.npz").exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES} (set CFRL_FIXTURES_DIR)")
    with np.load(FIXTURES / "inputs.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """The tiny reference model with perturbed (O(1)) parameters: strongly input-dependent outputs."""
    from core.checkpoint import load_checkpoint
    from core.config import ModelConfig

    cfg = ModelConfig.from_json(FIXTURES / "tiny" / "config.json")
    return load_checkpoint(FIXTURES / "tiny" / "perturbed", cfg)


@pytest.fixture(scope="session")
def base_checkpoint():
    """The shipped base model (checkpoints/base), part of the repository."""
    from core.checkpoint import load_checkpoint

    path = settings.checkpoints_dir() / "base"
    assert (path / "params.npz").exists(), f"the shipped base checkpoint is missing at {path}"
    return load_checkpoint(path)
