"""Compare page logic: two checkpoints sampled with the same settings, their rates side by side.

Rates come from ``core.scoring.metrics.summarize`` (fractions of all samples of an arm, so a sample
that could not be built or scored counts against its model); the paper's numbers are quoted next to
them for orientation (CrystalFormer-RL, Fig. 3 and Fig. 6, 1000 samples and Orb energies each).
"""
from __future__ import annotations

import math

import pandas as pd

from app.pool import Pool

RATE_ROWS = (
    # summarize() key, label, kind
    ("n_structures", "Samples", "count"),
    ("buildable", "Buildable (tokens → structure)", "rate"),
    ("validity", "Valid (structure and composition)", "rate"),
    ("uniqueness", "Unique", "rate"),
    ("novelty", "Novel", "rate"),
    ("stability_rate", "Stable (E_hull < 0.1 eV/atom)", "rate"),
    ("sun_rate", "S.U.N. (stable, unique, novel)", "rate"),
    ("mean_e_above_hull", "Mean E_hull (eV/atom)", "value3"),
    ("mean_fom_ev", "Mean FoM ε·E_g (eV)", "value2"),
)

PAPER_NOTES = (
    "Paper, Fig. 3 (1000 samples each, space groups from the training distribution, Orb energies, Alexandria hull): "
    "stable fraction 44.7 % for the base model, 57.8 % after relaxing its samples, 73.4 % for the RL (E_hull reward) "
    "model without relaxation.",
    "Paper, Fig. 6 (space group 225 Fm-3m, MEGNet band gap, AnisoNet ε_elec): RL with the FoM reward moves most "
    "samples above the ε·E_g = 10 eV line, mainly by widening the band gap, while E_hull barely changes (Fig. 6b).",
    "Paper, Fig. 5: S.U.N. rate 15.3 % (base, Alex-20) → 18.3 % (supervised fine-tuning) → 21.6 % (RL).",
)


def start_comparison(arms: dict[str, Pool], checkpoints, request, score_settings=None):
    """A background job: sample each arm's checkpoint with the same request, then score all arms."""
    from app import scoring
    from app.generation import sample_into
    from app.jobs import Job

    request.check()
    if score_settings is not None:
        scoring.preload(score_settings)

    def run(should_stop, job):
        targets = []
        for pool, checkpoint in zip(arms.values(), checkpoints):
            if should_stop():
                return
            targets.append((pool, sample_into(pool, checkpoint, request, job)))
        if score_settings is not None and not should_stop():
            yield from scoring.score_rows(targets, score_settings, should_stop, job)

    return Job("comparison", run, total=request.num).start()


def arm_labels(name_a: str, name_b: str) -> tuple[str, str]:
    """Display names of the two arms (distinct even when both use the same checkpoint)."""
    return (name_a, name_b) if name_a != name_b else (f"{name_a} (A)", f"{name_b} (B)")


def arm_summary(pool: Pool) -> dict[str, float]:
    """``summarize`` over every sample of the arm (unbuildable ones count as failures) + buildable fraction."""
    from core.scoring.metrics import summarize

    frame = pool.scored_frame()
    n = len(frame)
    built = frame["build_error"].isna() if n else pd.Series(dtype=bool)
    if n:  # a sample that is not even a structure is neither valid nor unique (nor novel)
        frame = frame.copy()
        for column in ("struct_valid", "comp_valid", "unique") + (("novel",) if frame.get("novel") is not None
                                                                   and frame["novel"].notna().any() else ()):
            if column in frame:
                frame[column] = frame[column].astype(object).where(built, False)
    summary = summarize(frame) if n else {}
    summary["n_structures"] = float(n)
    summary["buildable"] = float(built.mean()) if n else math.nan
    return summary


def _fmt(kind: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "count":
        return f"{int(value)}"
    if kind == "rate":
        return f"{100 * value:.1f} %"
    return f"{value:.3f}" if kind == "value3" else f"{value:.2f}"


def rates_table(summaries: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Metric rows × arm columns, formatted (percentages, eV/atom, eV)."""
    rows = []
    for key, label, kind in RATE_ROWS:
        rows.append({"Metric": label, **{arm: _fmt(kind, s.get(key)) for arm, s in summaries.items()}})
    return pd.DataFrame(rows).set_index("Metric")
