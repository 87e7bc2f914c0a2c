"""Typed exceptions. The CLI and the app turn each into one readable line (no traceback)."""
from __future__ import annotations


class CrystalFormerError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidInputError(CrystalFormerError, ValueError):
    """A user-supplied value is out of range or malformed (space group 0, unknown element, bad file)."""


class MissingResourceError(CrystalFormerError, FileNotFoundError):
    """A model, checkpoint or data file is absent. The message names it and says how to obtain it."""


class CheckpointError(CrystalFormerError):
    """A checkpoint exists but cannot be used (corrupt, unsafe, or shapes that do not fit its config)."""


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint's parameters hold NaN or infinite values (a damaged file or a diverged run):
    every log-probability computed from it would be NaN, so it is refused at load time."""


class ScoringError(CrystalFormerError):
    """One structure could not be scored; the scoring pipeline records it in that row's `error` column."""
