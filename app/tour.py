"""The "Start here" tour: a ten-minute path for a class (tokens → sampling → scoring → Pareto → what RL changes),
with presets on the shipped checkpoints. Logic only; the page is ``pages/tour.py``."""
from __future__ import annotations

from dataclasses import dataclass

from app.generation import GenerateRequest

TOUR_REQUEST = GenerateRequest(spacegroup=225, num=20, temperature=1.0, seed=0)   # small: minutes on a CPU
BASE_MODEL = "base"
RL_MODELS = ("rl-fom", "rl-ehull")      # the first one present shows what RL changes
STEPS = (
    # title, minutes
    ("Tokens: how the model writes a crystal", 2),
    ("Sampling: the base model writes crystals", 2),
    ("Scoring: what a reference can and cannot judge", 2),
    ("Pareto: the best trade-offs", 2),
    ("What RL changes", 2),
)


@dataclass(frozen=True)
class TourModels:
    """The shipped checkpoints the tour uses (None where absent, with the reason for the page)."""

    base: object | None
    rl: object | None

    def missing(self) -> str | None:
        if self.base is None:
            return f"The tour needs the shipped '{BASE_MODEL}' checkpoint in checkpoints/ (see README: Models)."
        if self.rl is None:
            return f"Step 5 needs an RL checkpoint ({' or '.join(RL_MODELS)}) in checkpoints/."
        return None


def tour_models(refs) -> TourModels:
    """Pick the tour's base and RL checkpoints among ``app.checkpoints.find_checkpoints()``."""
    by_name = {r.name: r for r in refs if r.origin == "shipped"}
    rl = next((by_name[n] for n in RL_MODELS if n in by_name), None)
    return TourModels(by_name.get(BASE_MODEL), rl)


def tokens_example() -> tuple[str, str]:
    """(description, token string) of rock salt NaCl, the tour's first crystal (a = 5.64 Å, Fm-3m)."""
    from pymatgen.core import Lattice, Structure

    from core.tokens import CrystalTokens

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return "rock salt NaCl (space group 225 Fm-3m, a = 5.64 Å)", CrystalTokens.from_structure(nacl).to_string()
