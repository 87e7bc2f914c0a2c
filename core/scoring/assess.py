"""The assessment of candidates: score, quantify uncertainty, check feasibility, rank.

``assess(structures, ...)`` is what ``python -m core trust`` runs: relax (optional, with the main MLIP),
score (``core.scoring.pipeline``), E_hull by an MLIP committee and ε_elec by the dielectric ensemble with
± (``core.scoring.uncertainty``), FoM ± propagated, the checklist of ``core.scoring.feasibility``, then
rank by FoM (``rank_by="mean"``) or its lower confidence bound FoM − k σ (``rank_by="lcb"``).

``judge(frame, structures, ...)`` is the part after scoring (± columns and the checklist) on a table
that is already scored: the app's shortlist assesses its stored entries with it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from pymatgen.core import Structure

from core.scoring.metrics import STABILITY_THRESHOLD_EV
from core.scoring.mlip import DEFAULT_MLIP
from core.scoring.uncertainty import COMMITTEE

RELAX_COLUMNS = ("relaxed", "relax_steps", "relax_converged", "match_relaxed", "rmsd_relaxed")


def _known(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without its missing values (None / NaN), so a check sees "unknown" the same way whether
    the row came from a table or from stored properties."""
    return {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def relax_all(structures: Sequence[Any], mlip: Any,
              log: Callable[[str], None] = lambda text: None) -> tuple[list[Any], list[dict[str, Any]]]:
    """Relaxed structure (or the exception) per input, and the pipeline's relaxation columns per input."""
    from core.scoring.metrics import relaxation_match
    from core.scoring.relax import relax

    finals, columns = [], []
    for k, structure in enumerate(structures):
        if not isinstance(structure, Structure):
            finals.append(structure)
            columns.append({})
            continue
        try:
            result = relax(structure, mlip)
        except Exception as exc:  # noqa: BLE001 - one structure never stops the batch
            finals.append(exc)
            columns.append({"relaxed": False})
            continue
        matched, rmsd = relaxation_match(structure, result.structure)
        finals.append(result.structure)
        columns.append({"relaxed": True, "relax_steps": int(result.steps), "relax_converged": bool(result.converged),
                        "match_relaxed": matched, "rmsd_relaxed": rmsd})
        log(f"relaxed {k + 1}/{len(structures)}")
    return finals, columns


def judge(frame: pd.DataFrame, structures: Sequence[Any], *, generated: Sequence[Any] | None = None,
          committee: Sequence[str] | None = COMMITTEE, hull: Any = "bundled", gap_std_ev: float = 0.0,
          k: float = 1.0, ehull_max: float = STABILITY_THRESHOLD_EV, device: str | None = None,
          on_member: Callable[[str, str | None], None] | None = None) -> pd.DataFrame:
    """A scored table with the ± columns (``core.scoring.uncertainty.add_uncertainty``) and the feasibility
    checklist (``feasible_*``, ``feasibility_failed``, ``feasibility_notes``) added.

    Args:
        frame: one row per structure (a ``score`` table, or stored score properties).
        structures: the structures the rows describe (relaxed ones when relaxed); anything else
            (an exception, None) gets no ± and the note "no structure".
        generated: the structures before relaxation, when ``structures`` are relaxed: relaxation and
            symmetry are then judged from the pair.
        committee: MLIP names for the E_hull committee (None: no committee).
        hull: hull reference for every committee member.
        gap_std_ev: band-gap σ (eV) for the FoM propagation (the band-gap model has no ensemble).
        k: confidence-bound width in σ.
        ehull_max: stability threshold of the checklist, eV/atom.
        device: torch device.
        on_member: called as ``on_member(name, why or None)`` after each committee member.
    """
    from core.scoring.feasibility import as_columns, feasibility
    from core.scoring.inputs import input_problem
    from core.scoring.uncertainty import add_uncertainty

    structures = list(structures)
    alive = [s if isinstance(s, Structure) and input_problem(s) is None else None for s in structures]
    frame = add_uncertainty(frame, alive, committee=committee or None, hull=hull, gap_std_ev=gap_std_ev, k=k,
                            device=device, on_member=on_member)
    checks = []
    for i, final in enumerate(structures):
        if not isinstance(final, Structure):
            checks.append({"feasibility_notes": "no structure"})
            continue
        before = generated[i] if generated is not None else None
        checks.append(as_columns(feasibility(final, _known(frame.iloc[i].to_dict()),
                                             relaxed=final if generated is not None else None,
                                             generated=before, ehull_max=ehull_max)))
    checks = pd.DataFrame(checks, index=frame.index)
    # a table judged before (stored shortlist properties) gets its checklist replaced, not duplicated
    return pd.concat([frame.drop(columns=[c for c in checks.columns if c in frame]), checks], axis=1)


def assess(structures: Sequence[Structure | Exception], *, mlip: str = DEFAULT_MLIP, relax: bool = False,
           hull: str = "bundled", committee: Sequence[str] | None = COMMITTEE,
           novelty: str | None = None, rank_by: str = "mean", k: float = 1.0, ehull_max: float = STABILITY_THRESHOLD_EV,
           gap_std_ev: float = 0.0, device: str | None = None,
           log: Callable[[str], None] = lambda text: None) -> tuple[pd.DataFrame, list[Structure | Exception]]:
    """Score, quantify uncertainty, check feasibility and rank.

    Args:
        structures: candidates (an Exception in a slot, e.g. an unreadable file, becomes an error row).
        mlip: the MLIP for relaxation and the main score.
        relax: relax each structure with ``mlip`` first (FIRE, fmax 0.1 eV/Å, ≤ 500 steps); the committee,
            properties, symmetry check and DFT export then use the relaxed structures.
        hull: hull reference for every committee member ("bundled", an entries file, "mp-api").
        committee: MLIP names for the E_hull committee (None: no committee).
        novelty: "training", a structure file, or None (novelty unknown).
        rank_by: "mean" (FoM) or "lcb" (FoM − k σ_FoM).
        k: confidence-bound width in σ.
        ehull_max: stability threshold of the checklist, eV/atom.
        gap_std_ev: band-gap σ (eV) for FoM propagation (the band-gap model has no ensemble).
        device: torch device.
        log: progress lines.

    Returns:
        (table ranked best first, with ``input_index``, scores, ± columns, ``feasible_*`` columns and ``rank``;
        the final structures, by input index: relaxed when ``relax``).
    """
    from core.scoring.mlip import load_mlip
    from core.scoring.pipeline import score
    from core.scoring.uncertainty import rank

    structures = list(structures)
    model = load_mlip(mlip, device=device)
    finals, relax_columns = relax_all(structures, model, log) if relax else (structures, [{}] * len(structures))
    checker = None
    if novelty:
        from core.scoring.references.training import novelty_reference

        log("loading the novelty reference")
        checker = novelty_reference(novelty)
    log(f"scoring {len(finals)} structures with {mlip}")
    frame = score(finals, mlip=model, hull=hull, device=device, training_set=checker)
    for column in RELAX_COLUMNS:
        frame[column] = [cols.get(column, frame.loc[i, column]) for i, cols in zip(frame.index, relax_columns)]
    for i, (before, after) in enumerate(zip(structures, finals)):
        if isinstance(after, BaseException) and isinstance(before, Structure):
            frame.loc[frame.index[i], "error"] = f"relax: {after}"
    log(f"committee: {', '.join(committee) if committee else 'none'}; dielectric ensemble")
    frame = judge(frame, finals, generated=structures if relax else None, committee=committee, hull=hull,
                  gap_std_ev=gap_std_ev, k=k, ehull_max=ehull_max, device=device,
                  on_member=lambda name, why: log(f"  {name}: {why or 'done'}"))
    frame.insert(0, "input_index", range(len(frame)))
    return rank(frame, rank_by, k), finals
