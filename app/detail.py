"""The structure detail panel (Explore, Shortlist): 3D view, property card, tokens, symmetry, XRD, downloads.

Display only: the 3D scene comes from ``core.view.view_html``, the XRD pattern from ``core.xrd``,
files from ``core.export``; this module lays them out and turns a missing piece into an inline note.
"""
from __future__ import annotations

import html
import math
from typing import Any, Mapping

import pandas as pd
import streamlit as st

from app.tables import format_value
from app.widgets import show_error

CARD_FIELDS = ("e_above_hull", "e_form_per_atom", "energy_per_atom", "band_gap_ev", "eps_elec", "fom_ev",
               "struct_valid", "comp_valid", "unique", "novel", "logp", "relax_steps", "rmsd_relaxed", "error")
CARD_LABELS = {"e_above_hull": "E_hull", "e_form_per_atom": "E_form", "energy_per_atom": "E", "band_gap_ev": "Band gap E_g",
               "eps_elec": "ε_elec", "fom_ev": "FoM ε·E_g", "struct_valid": "Structure valid",
               "comp_valid": "Composition valid", "unique": "Unique", "novel": "Novel", "logp": "log p (model)",
               "relax_steps": "Relaxation steps", "rmsd_relaxed": "RMSD to relaxed (norm.)", "error": "Scoring error"}
TOKEN_COLORS = {"G": "#6a3d9a", "W": "#1f78b4", "A": "#e31a1c", "X": "#33a02c", "L": "#ff7f00"}
VIEW_HEIGHT_PX = 420


# ---------------------------------------------------------------------------------------------
# pure helpers (tested without Streamlit)
# ---------------------------------------------------------------------------------------------
def lattice_facts(structure) -> dict[str, str]:
    """Cell facts with units: a, b, c (Å), α, β, γ (degrees), volume (Å³), density (g/cm³), atoms."""
    lat = structure.lattice
    return {
        "a, b, c": f"{lat.a:.3f}, {lat.b:.3f}, {lat.c:.3f} Å",
        "α, β, γ": f"{lat.alpha:.2f}°, {lat.beta:.2f}°, {lat.gamma:.2f}°",
        "Volume": f"{lat.volume:.2f} Å³ ({lat.volume / len(structure):.2f} Å³/atom)",
        "Density": f"{float(structure.density):.3f} g/cm³",
        "Atoms in cell": str(len(structure)),
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _with_std(key: str, value: Any, std: Any) -> str:
    """'0.012 ± 0.004 eV/atom': the value and its σ in the value's format and unit."""
    number, _, unit = format_value(key, value).partition(" ")
    sigma = format_value(key, std).partition(" ")[0]
    return f"{number} ± {sigma}" + (f" {unit}" if unit else "")


def property_card(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value with unit) for the scored properties present in ``row``; ± σ where the row
    has the ``<key>_std`` column of ``core.scoring.uncertainty`` (E_hull: the committee mean ± spread)."""
    out = []
    for key in CARD_FIELDS:
        if key not in row:
            continue
        value = row[key]
        if _missing(value):
            continue
        if key == "e_above_hull" and not _missing(row.get("e_above_hull_mean")):
            value = row["e_above_hull_mean"]
        std = row.get(f"{key}_std")
        if not isinstance(value, bool) and not _missing(std):
            out.append((CARD_LABELS[key], _with_std(key, value, std)))
        else:
            out.append((CARD_LABELS[key], format_value(key, value)))
    if not _missing(row.get("fom_ev_lcb")) and not _missing(row.get("fom_ev_std")):
        out.append(("FoM − 1σ", format_value("fom_ev", row["fom_ev_lcb"])))
    if isinstance(row.get("hull_coverage"), str) and not _missing(row.get("e_above_hull")):
        out.append(("Hull coverage", row["hull_coverage"]))
    if isinstance(row.get("flag_text"), str) and row["flag_text"]:
        out.append(("Checks", row["flag_text"]))
    return out


BADGE_COLORS = {True: ("#1b7a3a", "#e6f4ea"), False: ("#b3261e", "#fce8e6"), None: ("#5f6368", "#f1f3f4")}


def feasibility_checks(structure, row: Mapping[str, Any]) -> list:
    """The feasibility checklist (``core.scoring.feasibility``) of a structure and its score row.

    The "stable" check passes only where ``core.scoring.sanity.may_call_stable`` allows the word: a row
    whose hull cannot judge it (flagged) gets an unknown "stable" badge saying why.
    """
    from dataclasses import replace

    from app.flags import stable_word
    from core.scoring.feasibility import feasibility

    checks = feasibility(structure, row)
    word = stable_word(dict(row))
    return [replace(c, passed=None, reason=word) if c.name == "stable" and c.passed and word != "stable" and word
            else c for c in checks]


def badges_html(checks) -> str:
    """Coloured chips, one per check (green passes, red fails, grey unknown); the reason is the tooltip."""
    chips = []
    for check in checks:
        color, background = BADGE_COLORS[check.passed]
        mark = "✓" if check.passed else "?" if check.passed is None else "✗"
        chips.append(f'<span title="{html.escape(check.reason)}" style="display:inline-block;margin:2px;padding:1px 8px;'
                     f'border-radius:10px;border:1px solid {color};color:{color};background:{background};'
                     f'font-size:0.82em">{mark} {html.escape(check.label)}</span>')
    return f'<div style="line-height:1.9;margin-bottom:0.5rem">{"".join(chips)}</div>'


def feasibility_badges(structure, row: Mapping[str, Any]) -> None:
    """The checklist as badges, with the reasons of the failed / unknown ones listed below."""
    try:
        checks = feasibility_checks(structure, row)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not break the panel
        show_error(exc, "feasibility checks failed")
        return
    st.markdown("**Feasibility**")
    st.markdown(badges_html(checks), unsafe_allow_html=True)
    notes = [f"{c.label}: {c.reason}" for c in checks if c.passed is not True]
    if notes:
        st.caption(" · ".join(notes))


def split_tokens(token_string: str) -> list[tuple[str, str]]:
    """The string form as (kind, token): G = space group, then W, A, X, X, X per site, then six L.

    Negative numbers are written with a doubled dash ('--2.5'); that dash belongs to the number.
    """
    fields: list[str] = []
    negative = False
    for f in token_string.strip().split("-"):
        if f == "" and fields:
            negative = True
            continue
        fields.append(("-" if negative else "") + f)
        negative = False
    if len(fields) < 7:
        return [("G", f) for f in fields]
    kinds = ["G"] + ["W", "A", "X", "X", "X"] * ((len(fields) - 7) // 5) + ["L"] * 6
    return list(zip(kinds, fields)) if len(kinds) == len(fields) else [("G", f) for f in fields]


def tokens_html(token_string: str) -> str:
    """Coloured token chips (space group, Wyckoff letter, element, coordinates, lattice)."""
    chips = []
    for kind, tok in split_tokens(token_string):
        color = TOKEN_COLORS.get(kind, "#555")
        chips.append(f'<span style="display:inline-block;margin:2px;padding:1px 6px;border-radius:4px;'
                     f'border:1px solid {color};color:{color};font-family:monospace;font-size:0.85em">'
                     f'{html.escape(tok)}</span>')
    legend = " ".join(f'<span style="color:{c}">■</span> {name}' for name, c in
                      (("space group", TOKEN_COLORS["G"]), ("Wyckoff letter", TOKEN_COLORS["W"]),
                       ("element", TOKEN_COLORS["A"]), ("x, y, z", TOKEN_COLORS["X"]),
                       ("a, b, c (Å), α, β, γ (°)", TOKEN_COLORS["L"])))
    return f'<div style="line-height:1.9">{"".join(chips)}</div><div style="font-size:0.8em;color:#666">{legend}</div>'


def symmetry_table(structure, symprec: float = 0.1) -> tuple[dict[str, str], pd.DataFrame]:
    """Space group facts and the symmetry-inequivalent sites (element, Wyckoff, x, y, z) at ``symprec`` Å."""
    from core.symmetry import analyzer

    sga = analyzer(structure, symprec, "no symmetry for this structure")   # behind the sanity gate
    facts = {
        "Space group": f"{sga.get_space_group_number()} {sga.get_space_group_symbol()}",
        "Crystal system": sga.get_crystal_system(),
        "Point group": sga.get_point_group_symbol(),
        "Tolerance": f"{symprec} Å",
    }
    sym = sga.get_symmetrized_structure()
    rows = []
    for sites, wyckoff in zip(sym.equivalent_sites, sym.wyckoff_symbols):
        site = sites[0]
        x, y, z = (float(v) % 1.0 for v in site.frac_coords)
        rows.append({"Element": site.species_string, "Wyckoff": wyckoff, "Multiplicity": len(sites),
                     "x": round(x, 4), "y": round(y, 4), "z": round(z, 4)})
    return facts, pd.DataFrame(rows)


def facts_html(pairs) -> str:
    """A compact two-column (label, value) table as HTML."""
    rows = "".join(f'<tr><td style="color:#55606e;padding:3px 12px 3px 0;border:none">{html.escape(str(k))}</td>'
                   f'<td style="padding:3px 0;border:none;font-variant-numeric:tabular-nums">{html.escape(str(v))}</td></tr>'
                   for k, v in pairs)
    return f'<table style="border-collapse:collapse;border:none;margin-bottom:0.6rem;font-size:0.92rem">{rows}</table>'


# ---------------------------------------------------------------------------------------------
# Streamlit panel
# ---------------------------------------------------------------------------------------------
def _structure(structure_json: str):
    from pymatgen.core import Structure

    return Structure.from_str(structure_json, fmt="json")


@st.cache_data(show_spinner=False, max_entries=256)
def cached_view_html(structure_json: str, script: str | None, style: str, n: int, cell: str, bonds: bool) -> str:
    """The 3D page of a structure (cached: a rerun of the page never rebuilds an unchanged scene)."""
    from core.view import view_html

    return view_html(_structure(structure_json), script=script, style=style, supercell=(n, n, n), cell=cell,
                     bonds=bonds, width="100%", height=VIEW_HEIGHT_PX)


@st.cache_data(show_spinner=False, max_entries=256)
def cached_symmetry(structure_json: str) -> tuple[dict[str, str], pd.DataFrame]:
    return symmetry_table(_structure(structure_json))


@st.cache_data(show_spinner=False, max_entries=256)
def cached_xrd(structure_json: str) -> pd.DataFrame:
    from core.xrd import xrd_pattern

    return xrd_pattern(_structure(structure_json))


def facts_table(pairs) -> None:
    st.markdown(facts_html(pairs), unsafe_allow_html=True)


def static_3dmol_url() -> str | None:
    """URL of the local 3Dmol.js served by Streamlit (``server.enableStaticServing``, .streamlit/config.toml),
    or None (``core.view`` then inlines the file, or uses the CDN when it is absent)."""
    from app.paths import STATIC_3DMOL

    if not STATIC_3DMOL.is_file():
        return None
    try:
        served = bool(st.get_option("server.enableStaticServing"))
    except Exception:  # noqa: BLE001
        served = False
    return "/app/static/3Dmol-min.js" if served else None


def viewer_asset_missing() -> str | None:
    """Why the 3D viewer cannot draw offline (3Dmol.js absent from app/static/), naming the fix; None when present."""
    from app.paths import STATIC_3DMOL

    if STATIC_3DMOL.is_file():
        return None
    return (f"3D view unavailable: {STATIC_3DMOL.relative_to(STATIC_3DMOL.parents[2])} is missing (without it the "
            "viewer would need the internet). Run `make setup` (it fetches 3Dmol.js from npm), or copy 3Dmol-min.js "
            "into app/static/, then reload the page. Everything else on this page works without it.")


def legend_html(structure) -> str:
    """One coloured chip per element of ``structure`` in the viewer's colours (VESTA scheme)."""
    from core.view import FALLBACK_COLOR, element_colors

    try:
        colors = element_colors("VESTA")
    except Exception:  # noqa: BLE001 - without the colour table the legend is omitted, not the view
        return ""
    symbols = sorted({el.symbol for site in structure for el in site.species.elements})
    chips = "".join(f'<span style="display:inline-block;margin:2px 8px 2px 0"><span style="display:inline-block;'
                    f'width:0.9em;height:0.9em;border-radius:50%;border:1px solid #555;vertical-align:-0.1em;'
                    f'background:{colors.get(sym, FALLBACK_COLOR)}"></span> {html.escape(sym)}</span>' for sym in symbols)
    return f'<div style="font-size:0.85em;color:#333">Elements: {chips}</div>'


def viewer(structure, key: str) -> None:
    """3D view with style / supercell / cell / bonds controls and an element colour legend.

    Without the local 3Dmol.js a visible notice says how to get it (never an empty box).
    """
    missing = viewer_asset_missing()
    if missing:
        st.warning(missing, icon=":material/view_in_ar:")
        return
    c1, c2, c3, c4 = st.columns([1.2, 1, 1.2, 0.8])
    style = c1.selectbox("Style", ("ball-stick", "sphere", "stick"), key=f"{key}-style")
    n = c2.selectbox("Supercell", (1, 2, 3), key=f"{key}-super", format_func=lambda k: f"{k}×{k}×{k}")
    cell = c3.selectbox("Cell", ("conventional", "primitive", "as-is"), key=f"{key}-cell")
    bonds = c4.toggle("Bonds", value=True, key=f"{key}-bonds")
    try:
        page = cached_view_html(structure.to_json(), static_3dmol_url(), style, n, cell, bonds)
    except Exception as exc:  # noqa: BLE001 - a structure that cannot be drawn must not break the page
        show_error(exc, "could not draw this structure")
        return
    st.iframe(page, height=VIEW_HEIGHT_PX + 10)
    st.markdown(legend_html(structure), unsafe_allow_html=True)


def downloads(structure, name: str, key: str) -> None:
    from core.export import cif, poscar

    c1, c2 = st.columns(2)
    try:
        # the symmetrised CIF (symmetry search + read-back check) is written when clicked, not on every rerun
        c1.download_button("CIF", lambda: cif(structure), file_name=f"{name}.cif", mime="chemical/x-cif",
                           key=f"{key}-cif", on_click="ignore", width="stretch")
        c2.download_button("POSCAR", poscar(structure), file_name=f"{name}.vasp", mime="text/plain",
                           key=f"{key}-poscar", on_click="ignore", width="stretch")
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "could not write this structure")


def xrd_csv(pattern: pd.DataFrame) -> bytes:
    """The XRD pattern as CSV: 2θ (degrees, Cu Kα), intensity (normalised to 100), hkl, d spacing (Å) where known."""
    columns = [c for c in ("two_theta", "intensity", "hkl", "d_spacing") if c in pattern]
    names = {"two_theta": "two_theta_deg", "intensity": "intensity_rel", "hkl": "hkl", "d_spacing": "d_spacing_A"}
    return pattern[columns].rename(columns=names).to_csv(index=False).encode()


def xrd(structure, key: str = "xrd") -> None:
    from app.plots import xrd_figure

    try:
        pattern = cached_xrd(structure.to_json())
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "could not compute the XRD pattern")
        return
    st.plotly_chart(xrd_figure(pattern), width="stretch", key=f"{key}-chart")
    st.download_button("XRD pattern (CSV with hkl)", xrd_csv(pattern),
                       file_name=f"{structure.composition.reduced_formula}-xrd.csv", mime="text/csv",
                       key=f"{key}-csv", on_click="ignore", icon=":material/download:")


def structure_panel(structure, row: Mapping[str, Any], *, title: str, key: str, token_string: str | None = None) -> None:
    """Everything about one structure. ``row`` holds its score columns (may be partial)."""
    st.subheader(title)
    left, right = st.columns([3, 2])
    with left:
        viewer(structure, key)
    with right:
        st.markdown("**Cell**")
        facts_table(lattice_facts(structure).items())
        card = property_card(row)
        if card:
            st.markdown("**Properties**")
            facts_table(card)
        else:
            st.caption("Not scored yet: run the Score page to get E_hull, band gap, ε_elec and FoM.")
        feasibility_badges(structure, row)
        downloads(structure, f"{structure.composition.reduced_formula}-{key}", key)
    # lazy tabs: only the open one is computed and sent to the browser (an XRD chart and a site table
    # drawn in hidden tabs cost the browser most of a second on every rerun of the page)
    tab_tokens, tab_sym, tab_xrd = st.tabs(["Token sequence", "Symmetry", "XRD pattern"], on_change="rerun",
                                           key=f"{key}-tabs")
    if tab_tokens.open:
        with tab_tokens:
            if token_string is None:
                token_string = _tokens_of(structure)
            if token_string:
                st.markdown(tokens_html(token_string), unsafe_allow_html=True)
                st.code(token_string, language=None)
    if tab_sym.open:
        with tab_sym:
            try:
                facts, sites = cached_symmetry(structure.to_json())
            except Exception as exc:  # noqa: BLE001
                show_error(exc, "symmetry analysis failed")
            else:
                facts_table(facts.items())
                st.dataframe(sites, hide_index=True, width="stretch")
    if tab_xrd.open:
        with tab_xrd:
            xrd(structure, key=f"{key}-xrd")


def _tokens_of(structure) -> str | None:
    try:
        return cached_tokens(structure.to_json())
    except Exception as exc:  # noqa: BLE001 - e.g. more Wyckoff sites than the model's 21
        st.caption(f"No token sequence: {exc}")
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def cached_tokens(structure_json: str) -> str:
    """The token string of a structure (symmetry refinement: tens of ms for a cubic cell, so once)."""
    from core.tokens import CrystalTokens

    return CrystalTokens.from_structure(_structure(structure_json)).to_string()
