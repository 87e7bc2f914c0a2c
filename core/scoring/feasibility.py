"""What could make a candidate impractical: a checklist per structure, beside its scores.

Each check gives ``True`` (passes), ``False`` (fails) or ``None`` (cannot tell: the score it needs is
missing) plus a one-line reason. ``CHECKS`` in order:

``charge_balanced``
    SMACT charge neutrality + Pauling electronegativity test (``core.scoring.metrics.composition_validity``,
    SMACT's ``smact14`` oxidation states; alloys and elements pass).
``stable``
    E_hull ≤ ``ehull_max`` (default 0.1 eV/atom, the paper's threshold); with a committee
    (``e_above_hull_mean``/``_std``, ``core.scoring.uncertainty``) the mean is used and the reason gives ±σ.
``relaxation_ok``
    the MLIP relaxation converged and the relaxed structure still matches the generated one
    (StructureMatcher stol 0.5, ltol 0.3, angle_tol 10°) with normalised RMS displacement ≤ ``rmsd_max``
    (default 0.1); ``None`` when the candidate was not relaxed.
``symmetry_kept``
    the relaxed structure has the generated structure's space group (spglib, symprec 0.1 Å).
``novel``
    not in the training data (StructureMatcher; the pipeline's ``novel`` column or a ``NoveltyChecker``).
``safe_elements``
    no radioactive element (no stable isotope: Tc, Pm and Z ≥ 84) and none of the highly toxic elements
    ``TOXIC``: As, Be, Cd (IARC Group 1 carcinogens: arsenic, beryllium, cadmium and their inorganic
    compounds, IARC Monographs vol. 100C, 2012), Hg, Pb (restricted in electronics by the EU RoHS
    directive 2011/65/EU, Annex II, with Cd), Tl (acutely toxic; its compounds are US EPA P-listed acute
    hazardous wastes, 40 CFR 261.33).
``abundant_elements``
    none of the rarest stable elements ``SCARCE``: upper-continental-crust abundance below 0.1 ppm by mass
    (Rudnick & Gao 2003, *Composition of the continental crust*, Treatise on Geochemistry 3.01, upper crust:
    Ag 53 ppb, Au, Pd, Pt, Ru, Re, Os, Ir ≤ 1.5 ppb, Se 0.09, In 0.056, Hg 0.05 ppm; Rh and Te, not tabulated
    there, ≈ 0.001 ppm in the CRC Handbook's crustal abundance table); these are scarce and costly. Elements on the EU critical raw materials list (Regulation (EU) 2024/1252, Annex II, 2023
    list) are *named* in the reason (supply risk) but do not fail the check: the list includes such common
    constituents of candidates as B, F (fluorspar), P, Mg, Al, Si and Ti.

The table form (``feasibility_frame``) has one boolean-or-None column ``feasible_<check>`` per check, the
reasons in ``feasibility_notes`` and the count of failed checks in ``feasibility_failed``; the same names
go into exports and the shortlist's stored properties.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pymatgen.core import Element, Structure

from core.scoring.metrics import STABILITY_THRESHOLD_EV, NoveltyChecker, composition_validity, relaxation_match
from core.symmetry import SYMPREC_A, space_group_number

CHECKS = ("charge_balanced", "stable", "relaxation_ok", "symmetry_kept", "novel", "safe_elements", "abundant_elements")
LABELS = {"charge_balanced": "charge balanced", "stable": "stable", "relaxation_ok": "relaxation OK",
          "symmetry_kept": "symmetry kept", "novel": "novel", "safe_elements": "non-toxic, non-radioactive",
          "abundant_elements": "no scarce elements"}
RMSD_MAX = 0.1       # normalised RMS displacement (pymatgen's StructureMatcher normalisation)

RADIOACTIVE = frozenset({"Tc", "Pm"} | {Element.from_Z(z).symbol for z in range(84, 119)})
TOXIC = frozenset({"As", "Be", "Cd", "Hg", "Pb", "Tl"})
SCARCE = frozenset({"Ru", "Rh", "Pd", "Ag", "Re", "Os", "Ir", "Pt", "Au", "Te", "Se", "In", "Hg"})
#: EU 2023 critical raw materials (Regulation (EU) 2024/1252, Annex II) as elements: bauxite/aluminium -> Al,
#: baryte -> Ba, borates -> B, fluorspar -> F, phosphate rock/phosphorus -> P, coking coal/natural graphite -> C
#: (not listed here: carbon in a compound is not mined graphite), rare earths light and heavy -> Sc, Y, La-Lu,
#: platinum group metals -> Ru, Rh, Pd, Os, Ir, Pt; helium is not a solid-state constituent.
EU_CRITICAL_2023 = frozenset({
    "Al", "Sb", "As", "Ba", "Be", "Bi", "B", "Co", "Cu", "F", "Ga", "Ge", "Hf", "Li", "Mg", "Mn", "Ni", "Nb",
    "P", "Si", "Sr", "Ta", "Ti", "W", "V", "Sc", "Y", "Ru", "Rh", "Pd", "Os", "Ir", "Pt",
    *(Element.from_Z(z).symbol for z in range(57, 72)),
})


@dataclass(frozen=True)
class Check:
    """One item of the checklist: ``passed`` True / False / None (unknown) and why."""

    name: str
    passed: bool | None
    reason: str

    @property
    def label(self) -> str:
        return LABELS[self.name]


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _flag(row: Mapping[str, Any], key: str) -> bool | None:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def check_charge(structure: Structure) -> Check:
    ok = composition_validity(structure)
    formula = structure.composition.reduced_formula
    return Check("charge_balanced", ok, f"{formula}: " + ("charge-neutral oxidation states found (SMACT)" if ok else
                                                          "no charge-neutral assignment of common oxidation states (SMACT)"))


def check_stable(row: Mapping[str, Any], ehull_max: float = STABILITY_THRESHOLD_EV) -> Check:
    value = _number(row, "e_above_hull_mean")
    if value is None:
        value = _number(row, "e_above_hull")
    if value is None:
        return Check("stable", None, "no E_hull")
    std = _number(row, "e_above_hull_std")
    text = f"E_hull {value:.3f}" + (f" ± {std:.3f}" if std is not None else "") + " eV/atom"
    return Check("stable", value <= ehull_max, f"{text} {'≤' if value <= ehull_max else '>'} {ehull_max:g}")


def check_relaxation(row: Mapping[str, Any], generated: Structure | None = None, relaxed: Structure | None = None,
                     rmsd_max: float = RMSD_MAX) -> Check:
    """From the pipeline's columns (``relax_converged``, ``match_relaxed``, ``rmsd_relaxed``), or from the two
    structures when given."""
    converged = _flag(row, "relax_converged")
    if generated is not None and relaxed is not None:
        matched, rmsd = relaxation_match(generated, relaxed)
    else:
        if not _flag(row, "relaxed"):
            return Check("relaxation_ok", None, "not relaxed")
        matched, rmsd = _flag(row, "match_relaxed"), _number(row, "rmsd_relaxed")
    if converged is False:
        steps = row.get("relax_steps")
        return Check("relaxation_ok", False, f"relaxation did not converge{f' in {steps} steps' if steps else ''}")
    if matched is False:
        return Check("relaxation_ok", False, "relaxed structure no longer matches the generated one")
    if rmsd is not None and rmsd > rmsd_max:
        return Check("relaxation_ok", False, f"moved far on relaxation (RMSD {rmsd:.3f} > {rmsd_max:g})")
    if matched is None:
        return Check("relaxation_ok", None, "no relaxation match recorded")
    return Check("relaxation_ok", True, "converged, matches the generated structure" +
                 (f" (RMSD {rmsd:.3f})" if rmsd is not None else ""))


def check_symmetry(generated: Structure | None, relaxed: Structure | None, row: Mapping[str, Any] | None = None) -> Check:
    """Space group of the relaxed structure vs the generated one; without a relaxed structure, the found
    space group (``spacegroup_found``) vs the intended one (``spacegroup``) when a row gives both."""
    if generated is not None and relaxed is not None:
        before, after = space_group_number(generated, SYMPREC_A), space_group_number(relaxed, SYMPREC_A)
        if before is None or after is None:
            return Check("symmetry_kept", None, "no space group found")
        return Check("symmetry_kept", before == after, f"space group {before} → {after} on relaxation")
    row = row or {}
    intended, found = _number(row, "spacegroup"), _number(row, "spacegroup_found")
    if intended is not None and found is not None:
        return Check("symmetry_kept", int(intended) == int(found), f"generated in {int(intended)}, found {int(found)}")
    return Check("symmetry_kept", None, "no relaxed structure to compare")


def check_novel(structure: Structure, row: Mapping[str, Any], novelty: NoveltyChecker | None = None) -> Check:
    novel = novelty.is_novel(structure) if novelty is not None else _flag(row, "novel")
    if novel is None:
        return Check("novel", None, "no training set to compare with")
    return Check("novel", novel, "not in the training data" if novel else "matches a training structure")


def check_elements(structure: Structure) -> tuple[Check, Check]:
    symbols = {el.symbol for el in structure.composition.elements}
    radioactive, toxic = sorted(symbols & RADIOACTIVE), sorted(symbols & TOXIC)
    bad = [f"radioactive {', '.join(radioactive)}"] if radioactive else []
    bad += [f"highly toxic {', '.join(toxic)}"] if toxic else []
    safe = Check("safe_elements", not bad, "; ".join(bad) if bad else "no radioactive or highly toxic element")
    scarce, critical = sorted(symbols & SCARCE), sorted(symbols & EU_CRITICAL_2023)
    note = f" (EU critical raw materials: {', '.join(critical)})" if critical else ""
    abundant = Check("abundant_elements", not scarce,
                     (f"scarce, costly {', '.join(scarce)}" if scarce else "no element rarer than 0.1 ppm in the crust") + note)
    return safe, abundant


def feasibility(structure: Structure, row: Mapping[str, Any] | None = None, *, relaxed: Structure | None = None,
                generated: Structure | None = None, novelty: NoveltyChecker | None = None,
                ehull_max: float = STABILITY_THRESHOLD_EV, rmsd_max: float = RMSD_MAX) -> list[Check]:
    """The checklist (``CHECKS`` order) for one candidate.

    Args:
        structure: the candidate (the structure whose scores ``row`` holds).
        row: its score columns (``core.scoring.pipeline.COLUMNS``, optionally the ± columns of
            ``core.scoring.uncertainty``); missing ones make their checks None.
        relaxed / generated: the relaxed structure and the one generated before relaxation, when known
            (``generated`` defaults to ``structure``): they decide relaxation and symmetry directly.
        novelty: a NoveltyChecker over the training structures (else the row's ``novel``).
        ehull_max: stability threshold, eV/atom.
        rmsd_max: largest normalised RMS displacement on relaxation.
    """
    row = dict(row or {})
    generated = generated if generated is not None else (structure if relaxed is not None else None)
    safe, abundant = check_elements(structure)
    return [check_charge(structure), check_stable(row, ehull_max),
            check_relaxation(row, generated, relaxed, rmsd_max), check_symmetry(generated, relaxed, row),
            check_novel(structure, row, novelty), safe, abundant]


def as_columns(checks: Sequence[Check]) -> dict[str, Any]:
    """``feasible_<check>`` flags, ``feasibility_failed`` (count of False) and ``feasibility_notes`` (reasons)."""
    out: dict[str, Any] = {f"feasible_{c.name}": c.passed for c in checks}
    out["feasibility_failed"] = sum(c.passed is False for c in checks)
    out["feasibility_notes"] = "; ".join(f"{c.label}: {c.reason}" for c in checks if c.passed is not True)
    return out


def feasibility_frame(structures: Sequence[Structure | None], frame: pd.DataFrame | None = None, **kw: Any) -> pd.DataFrame:
    """``as_columns`` of every candidate, one row per structure (index of ``frame`` when given).

    A None structure (it failed earlier) gets None flags; ``kw`` goes to ``feasibility``
    (``relaxed=`` is not taken here: use ``feasibility`` per candidate for that).
    """
    rows = []
    records = frame.to_dict("records") if frame is not None else [{}] * len(structures)
    for structure, row in zip(structures, records):
        if structure is None:
            rows.append({**{f"feasible_{c}": None for c in CHECKS}, "feasibility_failed": None, "feasibility_notes": "no structure"})
            continue
        rows.append(as_columns(feasibility(structure, row, **kw)))
    return pd.DataFrame(rows, index=frame.index if frame is not None else None)


def badge(check: Check) -> str:
    """A short text badge: ✅ passes, ❌ fails, ❔ unknown, with the check's label."""
    return f"{'✅' if check.passed else '❔' if check.passed is None else '❌'} {check.label}"
