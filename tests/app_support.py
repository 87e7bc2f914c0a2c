"""Shared pieces of the app tests: a tiny checkpoint folder and a fast, exact stand-in for the scorer.

``fake_score_iter`` has ``core.scoring.pipeline.score_iter``'s signature and yields rows with every
pipeline column, computed from the structure by simple closed formulas (below), so tests know the
expected numbers independently of the app:

    band_gap_ev  = 0.5 × (number of distinct elements) + 0.01 × (atoms in cell)
    eps_elec     = 1 + volume per atom / 10        (Å³/atom)
    fom_ev       = eps_elec × band_gap_ev
    e_above_hull = 0.02 × (atoms in cell)           (eV/atom)

A structure containing Og gets an error row, as the real pipeline does for an unsupported element; one
containing La gets e_above_hull = 46.6 eV/atom (the absurd value issue #18 saw ranked first), which
``core.scoring.sanity`` flags as unphysical; a disordered one gets the pipeline's "disordered" error.
Rows carry the ``flags`` column when the pipeline has one.
"""
from __future__ import annotations

from pathlib import Path

from core.scoring.pipeline import COLUMNS
from core.scoring.sanity import row_flags

ABSURD_E_HULL_EV = 46.6   # eV/atom: the fake's E_hull for La compounds (unphysical: flagged)

TINY = dict(num_layers=1, num_heads=1, key_size=8, model_size=8, embed_size=8, h0_size=8, Kx=4, Kl=2)


def make_checkpoint(folder: Path, name: str = "base", seed: int = 42) -> Path:
    """A tiny untrained CrystalFormer saved in our format (config.json + params.npz + meta.json)."""
    from core.checkpoint import fresh_checkpoint, save_checkpoint
    from core.config import ModelConfig

    config = ModelConfig(**TINY)
    ck = fresh_checkpoint(config, seed=seed)
    return save_checkpoint(folder / name, config, ck.params,
                           {"name": name, "spacegroup_distribution": {"225": 0.5, "221": 0.5}})


def expected(structure) -> dict:
    n = len(structure)
    gap = 0.5 * len(structure.composition.elements) + 0.01 * n
    eps = 1.0 + structure.volume / n / 10.0
    return {"band_gap_ev": gap, "eps_elec": eps, "fom_ev": gap * eps, "e_above_hull": 0.02 * n}


def fake_score_iter(structures, *, mlip=None, relax=False, hull=None, properties=True, device=None,
                    training_set=None, progress=None, should_stop=None, batch_size=8):
    structures = list(structures)
    for start in range(0, len(structures), batch_size):
        if should_stop is not None and should_stop():
            return
        for i in range(start, min(start + batch_size, len(structures))):
            s = structures[i]
            row = dict.fromkeys(COLUMNS)
            row.update(formula=s.composition.reduced_formula, nsites=len(s), relaxed=False, spacegroup=None,
                       struct_valid=True, comp_valid=True, unique=True, novel=None, hull_reference="fake")
            if not s.is_ordered:
                row["error"] = "disordered structure (partial occupancies are not supported)"
            elif "Og" in s.composition:
                row["error"] = "energy: element Og not covered by fake"
            else:
                row.update(expected(s), energy_per_atom=-1.0, e_form_per_atom=-0.5)
                if "La" in s.composition:
                    row["e_above_hull"] = ABSURD_E_HULL_EV
            if "flags" in row:
                row["flags"] = ";".join(row_flags(row))
            yield i, row
        if progress is not None:
            progress(min(start + batch_size, len(structures)), len(structures))
