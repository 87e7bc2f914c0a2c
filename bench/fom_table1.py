"""CrystalFormer-RL Table I (DFT-verified high-FoM dielectrics) against this project's scorer.

    nice -n 10 .venv/bin/python bench/fom_table1.py [--v2 .cache/dielectric/model-v2]   # writes bench/fom_table1.md

The paper lists formula, DFT E_g (eV), ε_elec, FoM = ε_elec·E_g (eV) and E_hull, but no structures (they are
on an external drive link). Each candidate is therefore rebuilt from its prototype (assumptions below), relaxed
with the project's default MLIP relaxation (``core.scoring.relax.relax_many`` with ``load_mlip()``: FIRE +
FrechetCellFilter, fmax 0.1 eV/Å, ≤ 500 steps), then scored with ``core.scoring.pipeline.score`` (mlip=None,
hull=None: the app's band gap + ε + FoM path, shipped dielectric model, calibrated σ). With ``--v2`` the
feature_version 2 model in that folder predicts ε too (FoM with the same MEGNet gap).

Structure-building assumptions:

* A2BB'X6 elpasolites (double perovskites): Fm-3m (225), A 8c (1/4,1/4,1/4), B 4a (0,0,0), B' 4b (1/2,1/2,1/2),
  X 24e (x,0,0) with x = (r_B + r_X)/a; a = mean of the octahedral estimate 2(r_B + r_X) + 2(r_B' + r_X) and
  the A-site estimate 2√2 (r_A + r_X). Radii: pymatgen Shannon ionic radii of the oxidation states of
  ``Composition.oxi_state_guesses()`` (B is the lower-charged / first-listed of the two octahedral cations).
* A2BX6 with three elements (Y2ErF6): K2PtCl6 type (vacancy-ordered, B' site empty), a = 2√2 (r_A + r_X),
  x = (r_B + r_X)/a. It is not charge balanced with Y³⁺/Er³⁺/F⁻; common oxidation states are used for the radii.
* ABX3 (CsCaF3): cubic perovskite Pm-3m (221), B 1a (0,0,0), A 1b (1/2,1/2,1/2), X 3d (1/2,0,0);
  a = mean of 2(r_B + r_X) and √2 (r_A + r_X).
* K2Rb2AlF6 is not built: 8 K + 8 Rb + 4 Al per F-centred cell needs two 8-fold cation orbits plus a 4-fold
  one, and Fm-3m has only one 8-fold one (8c); the paper gives no other prototype.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pymatgen.core import Composition, Element, Lattice, Species, Structure  # noqa: E402

# (formula, DFT E_g eV, DFT ε_elec, DFT FoM eV, DFT E_hull eV/atom): CrystalFormer-RL Table I, in its order
TABLE_I = (
    ("Cs2LiLuF6", 7.37, 2.38, 17.52, 0.09), ("Cs2LiTmF6", 7.35, 2.37, 17.40, 0.08),
    ("Cs2LiHoF6", 7.32, 2.37, 17.39, 0.09), ("Cs2LiErF6", 7.29, 2.37, 17.28, 0.09),
    ("Cs2LiTbF6", 7.21, 2.36, 17.05, 0.09), ("Cs2LiDyF6", 7.17, 2.34, 16.80, 0.09),
    ("CsCaF3", 6.94, 2.32, 16.10, 0.06), ("Cs2LiScF6", 6.64, 2.40, 15.92, 0.09),
    ("Cs2NaTmF6", 6.98, 2.27, 15.84, 0.05), ("Cs2NaErF6", 6.96, 2.27, 15.77, 0.05),
    ("Cs2NaLuF6", 6.93, 2.26, 15.63, 0.05), ("Cs2NaHoF6", 6.90, 2.26, 15.59, 0.05),
    ("Cs2NaYF6", 6.89, 2.25, 15.48, 0.03), ("Cs2LiLuCl6", 5.34, 2.90, 15.48, 0.01),
    ("Rb2LiLuF6", 7.01, 2.19, 15.34, 0.07), ("Cs2LiHoCl6", 5.16, 2.86, 14.78, 0.01),
    ("Cs2LiTbCl6", 5.07, 2.89, 14.66, 0.01), ("Y2ErF6", 7.15, 1.96, 14.01, 0.05),
    ("Cs2SrMgCl6", 5.07, 2.74, 13.89, 0.03), ("Cs2MgPbF6", 5.29, 2.60, 13.77, 0.08),
    ("K2Rb2AlF6", 6.40, 2.02, 12.92, 0.06), ("Cs2RbDyCl6", 4.92, 2.46, 12.09, 0.03),
    ("Cs2ErGaCl6", 3.82, 3.05, 11.64, 0.04), ("Cs2BaPbI6", 3.17, 3.62, 11.48, 0.07),
    ("Cs2NaAlCl6", 3.97, 2.77, 11.00, 0.03), ("Rb2TmGaCl6", 3.60, 2.99, 10.77, 0.06),
)
NOT_IN_ALEX20 = {"Cs2LiLuF6", "Rb2LiLuF6"}   # the paper's two highlighted rows


def _elements(formula: str) -> list[tuple[str, int]]:
    return [(el, int(k or 1)) for el, k in re.findall(r"([A-Z][a-z]?)(\d*)", formula)]


def _oxidation(formula: str) -> dict[str, float]:
    guesses = Composition(formula).oxi_state_guesses()
    if guesses:
        return dict(guesses[0])
    return {el: Element(el).common_oxidation_states[0] for el, _ in _elements(formula)}


def _radius(el: str, ox: float) -> float:
    try:
        r = Species(el, ox).ionic_radius
    except Exception:  # noqa: BLE001 - unusual oxidation state
        r = None
    return float(r) if r else float(Element(el).average_ionic_radius)


def build(formula: str) -> tuple[Structure, str]:
    """The prototype structure of a Table I formula and a one-line description of how it was built."""
    parts = _elements(formula)
    ox = _oxidation(formula)
    r = {el: _radius(el, ox[el]) for el, _ in parts}
    if len(parts) == 3 and parts[0][1] == 1 and parts[2][1] == 3:            # ABX3 cubic perovskite
        (a_el, _), (b_el, _), (x_el, _) = parts
        a = 0.5 * (2 * (r[b_el] + r[x_el]) + math.sqrt(2) * (r[a_el] + r[x_el]))
        s = Structure.from_spacegroup(221, Lattice.cubic(a), [b_el, a_el, x_el],
                                      [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
        return s, f"perovskite Pm-3m, a0 = {a:.2f} Å"
    if len(parts) == 3 and parts[0][1] == 2 and parts[2][1] == 6:            # A2BX6, K2PtCl6 type
        (a_el, _), (b_el, _), (x_el, _) = parts
        a = 2 * math.sqrt(2) * (r[a_el] + r[x_el])
        x = min(max((r[b_el] + r[x_el]) / a, 0.18), 0.32)
        s = Structure.from_spacegroup(225, Lattice.cubic(a), [a_el, b_el, x_el],
                                      [[0.25, 0.25, 0.25], [0, 0, 0], [x, 0, 0]])
        return s, f"K2PtCl6 type Fm-3m, a0 = {a:.2f} Å, x = {x:.3f}"
    if len(parts) == 4 and parts[0][1] == 2 and parts[1][1] == 1 and parts[2][1] == 1 and parts[3][1] == 6:
        (a_el, _), (b_el, _), (c_el, _), (x_el, _) = parts                # A2 B B' X6 elpasolite
        a_oct = 2 * (r[b_el] + r[x_el]) + 2 * (r[c_el] + r[x_el])
        a_site = 2 * math.sqrt(2) * (r[a_el] + r[x_el])
        a = 0.5 * (a_oct + a_site)
        x = min(max((r[b_el] + r[x_el]) / a, 0.18), 0.32)
        s = Structure.from_spacegroup(225, Lattice.cubic(a), [a_el, b_el, c_el, x_el],
                                      [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5], [x, 0, 0]])
        return s, f"elpasolite Fm-3m, a0 = {a:.2f} Å (octahedral {a_oct:.2f}, A-site {a_site:.2f}), x = {x:.3f}"
    raise ValueError(f"{formula}: no Fm-3m / Pm-3m prototype with standard Wyckoff sites (see module docstring)")


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--v2", type=Path, default=None, help="folder of a feature_version 2 dielectric model")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "fom_table1.md")
    args = parser.parse_args(argv)

    from core.scoring.dielectric import load_dielectric_model
    from core.scoring.fom import figure_of_merit
    from core.scoring.mlip import DEFAULT_MLIP, load_mlip
    from core.scoring.pipeline import score
    from core.scoring.relax import relax_many
    from core.scoring.uncertainty import dielectric_ensemble

    rows, built, index = [], [], []
    for formula, gap, eps, fom, ehull in TABLE_I:
        row = {"formula": formula, "dft_gap": gap, "dft_eps": eps, "dft_fom": fom, "dft_ehull": ehull}
        try:
            structure, how = build(formula)
            row["built"] = how
            # the primitive cell (10 atoms for an elpasolite, not 40): same crystal, 4× cheaper to relax
            row["cells_per_conventional"] = 4 if structure.get_space_group_info()[1] == 225 else 1
            built.append(structure.get_primitive_structure())
            index.append(len(rows))
        except ValueError as exc:
            row["built"] = f"not built: {exc}"
        rows.append(row)

    t0 = time.perf_counter()
    mlip = load_mlip(DEFAULT_MLIP)
    relaxed = relax_many(built, mlip)
    t_relax = time.perf_counter() - t0
    structures = []
    for i, result in zip(index, relaxed):
        if isinstance(result, Exception):
            rows[i]["error"] = f"relax: {result}"
            structures.append(built[index.index(i)])
            continue
        rows[i].update(relax_steps=result.steps, relax_converged=result.converged,
                       a_relaxed=round(float((result.structure.volume * rows[i]["cells_per_conventional"]) ** (1 / 3)), 3),
                       spacegroup=None)
        structures.append(result.structure)
    from core.symmetry import space_group_number  # noqa: E402

    for i, s in zip(index, structures):
        rows[i]["spacegroup"] = space_group_number(s, 0.1)

    frame = score(structures, mlip=None, hull=None, relax=False)   # the app's gap + ε + FoM path, shipped model
    for i, (_, r) in zip(index, frame.iterrows()):
        rows[i].update(gap=r["band_gap_ev"], eps=r["eps_elec"], eps_std=r["eps_elec_std"], fom=r["fom_ev"],
                       score_error=r["error"])
    if args.v2 is not None:
        v2 = load_dielectric_model(args.v2)
        ens = dielectric_ensemble(structures, v2)
        for i, (_, r) in zip(index, ens.iterrows()):
            if r["eps_elec_error"] is None:
                rows[i].update(eps_v2=float(r["eps_elec_mean"]), eps_v2_std=float(r["eps_elec_std"]),
                               fom_v2=figure_of_merit(r["eps_elec_mean"], rows[i].get("gap")))
    t_total = time.perf_counter() - t0

    (args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=1, default=str))
    write_md(rows, args.out, t_relax, t_total, args.v2, DEFAULT_MLIP)
    print(args.out.read_text())
    return 0


def _f(v, fmt="{:.2f}") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def write_md(rows, out: Path, t_relax: float, t_total: float, v2: Path | None, mlip_name: str) -> None:
    ok = [r for r in rows if r.get("eps") is not None and np.isfinite(r["eps"]) and r.get("fom") is not None]
    def stats(key_eps, key_fom):
        sel = [r for r in ok if r.get(key_eps) is not None]
        if len(sel) < 3:
            return None
        de = np.array([r[key_eps] - r["dft_eps"] for r in sel])
        return {"n": len(sel), "eps_mae": float(np.mean(np.abs(de))), "eps_bias": float(np.mean(de)),
                "rho_fom": spearman([r[key_fom] for r in sel], [r["dft_fom"] for r in sel]),
                "rho_fom_dft_gap": spearman([r[key_eps] * r["dft_gap"] for r in sel], [r["dft_fom"] for r in sel]),
                "rho_eps": spearman([r[key_eps] for r in sel], [r["dft_eps"] for r in sel])}
    shipped, new = stats("eps", "fom"), stats("eps_v2", "fom_v2")
    gap = [r for r in ok if r.get("gap") is not None]
    gap_mae = float(np.mean([abs(r["gap"] - r["dft_gap"]) for r in gap]))
    gap_bias = float(np.mean([r["gap"] - r["dft_gap"] for r in gap]))
    rho_gap = spearman([r["gap"] for r in gap], [r["dft_gap"] for r in gap])
    head = "| # | formula | prototype (built) | a relaxed (Å, conventional) | SG | DFT E_g | pred E_g | DFT ε | pred ε ± σ (shipped) |"
    sep = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    if v2:
        head += " pred ε ± σ (v2) |"
        sep += " --- |"
    head += " DFT FoM | pred FoM (shipped) |" + (" pred FoM (v2) |" if v2 else "")
    sep += " --- | --- |" + (" --- |" if v2 else "")
    lines = [head, sep]
    for k, r in enumerate(rows, 1):
        name = f"**{r['formula']}**" if r["formula"] in NOT_IN_ALEX20 else r["formula"]
        proto = r["built"].split(",")[0]
        line = (f"| {k} | {name} | {proto} | {_f(r.get('a_relaxed'), '{:.3f}')} | {r.get('spacegroup') or '—'} | "
                f"{r['dft_gap']:.2f} | {_f(r.get('gap'))} | {r['dft_eps']:.2f} | "
                f"{_f(r.get('eps'))} ± {_f(r.get('eps_std'))} |")
        if v2:
            line += f" {_f(r.get('eps_v2'))} ± {_f(r.get('eps_v2_std'))} |"
        line += f" {r['dft_fom']:.2f} | {_f(r.get('fom'))} |" + (f" {_f(r.get('fom_v2'))} |" if v2 else "")
        lines.append(line)
    def summary(name, s):
        if s is None:
            return f"- {name}: not available"
        verdict = "met" if s["rho_fom"] >= 0.7 else "NOT met"
        return (f"- {name} (n = {s['n']}): ε MAE vs DFT **{s['eps_mae']:.3f}** (bias {s['eps_bias']:+.3f}); "
                f"Spearman ρ(pred ε, DFT ε) {s['rho_eps']:.2f}; Spearman ρ(pred FoM, DFT FoM) **{s['rho_fom']:.2f}** "
                f"(target ≥ 0.7: {verdict}); with the DFT E_g in place of MEGNet's, ρ(pred ε × DFT E_g, DFT FoM) "
                f"{s['rho_fom_dft_gap']:.2f}")
    conv = sum(1 for r in rows if r.get("relax_converged"))
    nrel = sum(1 for r in rows if "relax_steps" in r)
    doc = __doc__.split("Structure-building assumptions:")[1].strip()
    text = f"""# CrystalFormer-RL Table I vs this project's scorer

Written by `bench/fom_table1.py` (`nice -n 10 .venv/bin/python bench/fom_table1.py{' --v2 ' + str(v2) if v2 else ''}`).
Paper: CrystalFormer-RL, Table I (26 DFT-verified Fm-3m / perovskite dielectrics with E_hull < 0.1 eV/atom; DFT
E_g, ε_elec, FoM = ε_elec·E_g). The paper's structures are not available offline, so each formula is rebuilt from its
prototype, relaxed with the default MLIP ({mlip_name}, `relax_many`: FIRE + FrechetCellFilter, fmax 0.1 eV/Å,
≤ 500 steps; {conv}/{nrel} converged) and scored with `core.scoring.pipeline.score(mlip=None, hull=None)` — the
app's path: MEGNet PBE band gap, shipped ε model (`checkpoints/dielectric`, feature_version 1) with its calibrated σ,
FoM = ε × max(E_g, 0).{' The v2 columns use the feature_version 2 model of ' + str(v2) + ' (issue #20 recipe trained on all matbench rows; not shipped), same gap.' if v2 else ''}
Bold: the paper's two rows absent from Alex-20. Time: relaxation {t_relax:.0f} s, all {t_total:.0f} s (2 shared cores).

## Structure-building assumptions

{doc}

## Results

{chr(10).join(lines)}

## Summary

{summary('shipped ε model', shipped)}
{summary('v2 ε model', new) if v2 else ''}
- band gap (MEGNet PBE) vs DFT E_g (n = {len(gap)}): MAE {gap_mae:.2f} eV (bias {gap_bias:+.2f} eV), Spearman {rho_gap:.2f};
  ρ(MEGNet E_g × DFT ε, DFT FoM) {spearman([r["gap"] * r["dft_eps"] for r in gap], [r["dft_fom"] for r in gap]):.2f}

Caveats: the DFT values are the paper's (its functional; ε_elec presumably PBE DFPT like matbench); the structures
here are prototypes relaxed by M3GNet, not the paper's relaxed cells, so part of any difference is structural. The
26 rows span a narrow ε range (1.96–3.62) and are mostly one chemistry (Cs/Rb elpasolite fluorides and chlorides),
so a rank correlation over them is a strict test of small differences. What limits the FoM ranking is the band gap,
not ε: MEGNet's PBE gap under-ranks the Li/Na fluorides (≈ 0.7–1 eV low) and over-ranks the Ga/Al chlorides
(≈ 1.0–1.4 eV high), while either ε model times the DFT gap ranks the FoM at ρ ≥ 0.8. The worst ε row is Y2ErF6
(+0.6): a K2PtCl6-type guess for a formula that is not charge balanced, which M3GNet expanded from a0 6.3 Å to
8.3 Å, so its structure is probably not the paper's.
"""
    out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
