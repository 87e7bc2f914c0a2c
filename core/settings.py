"""Where models, checkpoints and data live.

Every location is an environment variable with a development default, so the same code works
in this repository (with ``../shared`` beside it), in CI and on a user's machine:

=========================  ==========================================  =======================================
variable                   default                                     holds
=========================  ==========================================  =======================================
``CFRL_SHARED``            ``<repo>/../shared``                        the offline copies (models, data, fixtures)
``CFRL_MODELS_DIR``        ``$CFRL_SHARED/models``                     MLIP / property-model weights (matgl/...)
``CFRL_DATA_DIR``          ``$CFRL_SHARED/data``                       reference entries (hulls, elemental refs)
``CFRL_FIXTURES_DIR``      ``$CFRL_SHARED/fixtures``                   reference-implementation fixtures (tests)
``CFRL_CHECKPOINTS_DIR``   ``<repo>/checkpoints``                      CrystalFormer checkpoints + model cards
``CFRL_CACHE_DIR``         ``~/.cache/crystalformer-rl``               computed caches (e.g. MLIP hull energies)
``CFRL_APP_DATA_DIR``      ``~/.local/share/crystalformer-rl``         app data: shortlist database, runs
=========================  ==========================================  =======================================

``require(path, what, how)`` is the one place that turns a missing file into a helpful message.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import MissingResourceError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def shared_dir() -> Path:
    return _env_path("CFRL_SHARED", (REPO_ROOT.parent / "shared").resolve())


def models_dir() -> Path:
    return _env_path("CFRL_MODELS_DIR", shared_dir() / "models")


def data_dir() -> Path:
    return _env_path("CFRL_DATA_DIR", shared_dir() / "data")


def fixtures_dir() -> Path:
    return _env_path("CFRL_FIXTURES_DIR", shared_dir() / "fixtures")


def checkpoints_dir() -> Path:
    return _env_path("CFRL_CHECKPOINTS_DIR", REPO_ROOT / "checkpoints")


def cache_dir() -> Path:
    path = _env_path("CFRL_CACHE_DIR", Path.home() / ".cache" / "crystalformer-rl")
    path.mkdir(parents=True, exist_ok=True)
    return path


def app_data_dir() -> Path:
    path = _env_path("CFRL_APP_DATA_DIR", Path.home() / ".local" / "share" / "crystalformer-rl")
    path.mkdir(parents=True, exist_ok=True)
    return path


def require(path: str | os.PathLike, what: str, how: str) -> Path:
    """Return ``path`` if it exists, else raise MissingResourceError naming it and how to obtain it.

    Args:
        path: the file or folder needed.
        what: a short human name ("M3GNet-MP-2021.2.8-PES weights").
        how: how a user gets it ("set CFRL_MODELS_DIR to the folder holding matgl/<name>, or ...").
    """
    p = Path(path)
    if not p.exists():
        raise MissingResourceError(f"{what} not found at {p}. {how}")
    return p
