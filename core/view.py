"""3D views of crystal structures (py3Dmol / 3Dmol.js) for notebooks and the Streamlit app.

``view(structure)`` returns a ``py3Dmol.view`` that a notebook displays directly; ``view_html(structure)``
returns a self-contained HTML page for ``streamlit.components.v1.html``. Both draw the same scene:

* the unit cell (or every cell of a supercell) as thin cylinders, with ``a``, ``b``, ``c`` labels;
* atoms coloured by the VESTA or Jmol element scheme shipped with crystal-toolkit, ball radii scaled from
  pymatgen's empirical atomic radii (Å);
* atoms that sit on cell faces, edges or corners repeated on every equivalent boundary, so the cell looks
  complete (a cubic NaCl conventional cell shows 27 atoms, not 8);
* optional bonds between atoms closer than ``BOND_TOLERANCE`` × the sum of their covalent radii
  (Cordero 2008, via ASE), skipping metal–metal pairs when the crystal also holds non-metals, found with a
  k-d tree so a 100-atom cell with a supercell takes milliseconds;
* a hover label with each atom's species and fractional coordinates.

3Dmol.js comes from the local copy ``app/static/3Dmol-min.js`` (``make app/static/3Dmol-min.js`` fetches it
from npm) so the viewer works offline: ``view_html`` inlines it, ``view`` loads it as a ``data:`` URI. Only
when that file is absent do both fall back to the jsDelivr CDN (which needs internet).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html as html_lib
import importlib.util
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import py3Dmol
from pymatgen.core import Element, Structure
from scipy.spatial import cKDTree

from core.errors import InvalidInputError
from core.settings import REPO_ROOT
from core.structure_check import require_sane
from core.symmetry import analyzer

log = logging.getLogger(__name__)

#: Local copy of 3Dmol.js (same version as the py3Dmol package), fetched by the Makefile.
ASSET_PATH: Path = REPO_ROOT / "app" / "static" / "3Dmol-min.js"
#: Where 3Dmol.js is loaded from when the local copy is absent (needs internet).
CDN_URL: str = f"https://cdn.jsdelivr.net/npm/3dmol@{py3Dmol.__version__}/build/3Dmol-min.js"

Style = Literal["ball-stick", "sphere", "stick"]
CellSetting = Literal["conventional", "primitive", "as-is"]
STYLES: tuple[str, ...] = ("ball-stick", "sphere", "stick")
CELL_SETTINGS: tuple[str, ...] = ("conventional", "primitive", "as-is")
COLOR_SCHEMES: tuple[str, ...] = ("VESTA", "Jmol")

#: Ball radius = this factor × the element's atomic radius (Å), per style.
BALL_SCALE: dict[str, float] = {"ball-stick": 0.5, "sphere": 1.0}
#: Stick (bond) radius in Å; in "stick" style atoms are drawn with this radius too.
STICK_RADIUS: float = 0.15
#: A bond is drawn when the distance ≤ BOND_TOLERANCE × (sum of covalent radii).
BOND_TOLERANCE: float = 1.2
#: Fractional distance within which an atom counts as lying on a cell boundary.
BOUNDARY_TOL: float = 1e-3
#: Symmetry tolerance (Å) for the conventional / primitive settings. spglib also idealises the positions
#: within it, so it is kept small: a slightly distorted relaxed crystal is shown as it is, not symmetrised.
SYMPREC: float = 0.01
#: Camera: turn about c and tilt from above (degrees), so that no lattice plane is seen edge-on.
VIEW_SPIN: float = -25.0
VIEW_TILT: float = 15.0
#: Magnification after fitting the scene into the viewer (3Dmol.js zoomTo leaves a wide margin).
ZOOM: float = 1.4
CELL_COLOR = "#333333"
FALLBACK_COLOR = "#ff1493"   # an element missing from the scheme stands out instead of passing as another one
MAX_SUPERCELL = 6


# ----------------------------------------------------------------------------------------------------------
# Element colours and radii
# ----------------------------------------------------------------------------------------------------------
@functools.cache
def _crystal_toolkit_schemes() -> dict[str, dict[str, list[int]]]:
    """The colour tables crystal-toolkit ships (``core/ElementColorSchemes.yaml``), read without importing
    crystal_toolkit itself (its ``__init__`` pulls in Dash and patches MSONable)."""
    from monty.serialization import loadfn

    spec = importlib.util.find_spec("crystal_toolkit")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError("crystal-toolkit is not installed; it supplies the VESTA/Jmol element colours "
                                "(pip install -r requirements.txt).")
    path = Path(next(iter(spec.submodule_search_locations))) / "core" / "ElementColorSchemes.yaml"
    return loadfn(path)


@functools.cache
def _element_colors(scheme: str) -> dict[str, str]:
    tables = _crystal_toolkit_schemes()
    names = {name.lower(): name for name in tables if name != "Extras"}
    if scheme.lower() not in names:
        raise InvalidInputError(f"unknown colour scheme {scheme!r}; choose one of {', '.join(sorted(names.values()))}")
    return {el: "#{:02x}{:02x}{:02x}".format(*rgb) for el, rgb in tables[names[scheme.lower()]].items()}


def element_colors(scheme: str = "VESTA") -> dict[str, str]:
    """Element symbol -> ``"#rrggbb"`` for the VESTA or Jmol scheme (crystal-toolkit's tables)."""
    return dict(_element_colors(scheme))


@functools.cache
def atomic_radius(symbol: str) -> float:
    """Empirical atomic radius in Å (pymatgen), falling back to the calculated radius, then 1.5 Å."""
    try:
        el = Element(symbol)
    except ValueError:
        return 1.5
    for radius in (el.atomic_radius, el.atomic_radius_calculated):
        if radius is not None:
            return float(radius)
    return 1.5


@functools.cache
def covalent_radius(symbol: str) -> float:
    """Covalent radius in Å (Cordero et al. 2008, as tabulated by ASE); 0 for unknown symbols (no bonds)."""
    from ase.data import atomic_numbers, covalent_radii

    z = atomic_numbers.get(symbol)
    return float(covalent_radii[z]) if z else 0.0


@functools.cache
def _is_metal(symbol: str) -> bool:
    try:
        return bool(Element(symbol).is_metal)
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Scene: which atoms, where, bonded to what
# ----------------------------------------------------------------------------------------------------------
def cell_setting(structure: Structure, cell: str = "conventional", symprec: float = SYMPREC) -> Structure:
    """The structure in the requested setting: conventional standard, primitive standard, or as given.

    Falls back to the structure as given when the symmetry search fails (e.g. a badly distorted cell).
    Raises InvalidInputError for a structure ``core.structure_check`` refuses.
    """
    if cell not in CELL_SETTINGS:
        raise InvalidInputError(f"cell must be one of {CELL_SETTINGS}, got {cell!r}")
    if cell == "as-is":
        return structure
    require_sane(structure, "cannot show this structure")   # spglib never sees a broken cell
    try:
        sga = analyzer(structure, symprec)
        if cell == "conventional":
            return sga.get_conventional_standard_structure()
        return sga.get_primitive_standard_structure()
    except Exception as exc:  # spglib gives up on some cells: show them as they are
        log.warning("symmetry search failed (%s); showing the cell as given", exc)
        return structure


def _site_label(site) -> tuple[str, str]:
    """(element symbol used for colour and radius, species text for the hover label) of one site.

    A disordered site is drawn as its majority species and labelled with every occupancy."""
    dominant = max(site.species.items(), key=lambda kv: kv[1])[0]
    if site.is_ordered:
        return dominant.symbol, str(dominant)
    return dominant.symbol, " ".join(f"{sp}:{occ:.2f}" for sp, occ in site.species.items())


def _supercell(supercell: int | Sequence[int]) -> np.ndarray:
    sc = np.array([supercell] * 3 if np.isscalar(supercell) else list(supercell), dtype=int)
    if sc.shape != (3,) or (sc < 1).any() or (sc > MAX_SUPERCELL).any():
        raise InvalidInputError(f"supercell must be three integers from 1 to {MAX_SUPERCELL}, got {supercell!r}")
    return sc


def scene_atoms(structure: Structure, supercell: int | Sequence[int] = (1, 1, 1),
                tol: float = BOUNDARY_TOL) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Atoms to draw: every site in the supercell plus its images on the far cell boundaries.

    Returns ``(site_index, frac, cart)``: for each drawn atom, the index of its site in ``structure``, its
    fractional coordinates in units of the unit cell (0 ≤ f ≤ supercell), and its Cartesian position (Å).
    """
    sc = _supercell(supercell)
    frac = np.asarray(structure.frac_coords, dtype=float) % 1.0
    frac[frac > 1.0 - tol] -= 1.0                      # 0.9999 -> -0.0001: an atom on the origin face
    shifts = np.stack(np.meshgrid(*[np.arange(n + 1) for n in sc], indexing="ij"), -1).reshape(-1, 3)
    cand = frac[None, :, :] + shifts[:, None, :]      # (n_shift, n_site, 3)
    inside = ((cand >= -tol) & (cand <= sc + tol)).all(-1)
    shift_idx, site_idx = np.nonzero(inside)
    order = np.lexsort((shift_idx, site_idx))          # group each site's images together
    site_idx, shift_idx = site_idx[order], shift_idx[order]
    f = cand[shift_idx, site_idx]
    return site_idx.tolist(), f, f @ structure.lattice.matrix


def find_bonds(symbols: Sequence[str], cart: np.ndarray, tolerance: float = BOND_TOLERANCE) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of drawn atoms closer than ``tolerance`` × (r_cov,i + r_cov,j).

    When the atoms include non-metals, metal–metal pairs are not bonded (Na–Na in NaCl, Cs–Cs in CsCl);
    in an all-metal crystal every close pair is.
    """
    if len(symbols) < 2:
        return []
    radii = np.array([covalent_radius(s) for s in symbols])
    metal = np.array([_is_metal(s) for s in symbols])
    pairs = cKDTree(cart).query_pairs(r=tolerance * 2 * radii.max(), output_type="ndarray")
    if len(pairs) == 0:
        return []
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(cart[i] - cart[j], axis=1)
    keep = (d <= tolerance * (radii[i] + radii[j])) & (d > 0.1)
    if not metal.all():
        keep &= ~(metal[i] & metal[j])
    return sorted((int(a), int(b)) for a, b in pairs[keep])


def _cell_edges(matrix: np.ndarray, sc: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Line segments (Cartesian start, end in Å) of the cell grid spanning the supercell."""
    edges = []
    for axis in range(3):
        others = [k for k in range(3) if k != axis]
        for u in range(sc[others[0]] + 1):
            for v in range(sc[others[1]] + 1):
                start = np.zeros(3)
                start[others[0]], start[others[1]] = u, v
                end = start.copy()
                end[axis] = sc[axis]
                edges.append((start @ matrix, end @ matrix))
    return edges


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """Rotation matrix for row vectors (p @ R) about Cartesian axis 0, 1 or 2."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, s, -s, c
    return r


def scene_frame(matrix: np.ndarray) -> np.ndarray:
    """Orthogonal 3×3 map (row vectors) from pymatgen Cartesian coordinates to the screen.

    First the lattice is turned into the standard crystallographic orientation (c along z, a in the xz
    plane, as ``Lattice.from_parameters``), so every structure starts the same way whatever its
    Cartesian frame; a left-handed lattice keeps its own frame (a rotation cannot fix its handedness).
    Then the camera looks along -b with c up, turned by VIEW_SPIN about c and tilted VIEW_TILT from above.
    """
    from pymatgen.core import Lattice

    frame = np.eye(3)
    if np.linalg.det(matrix) > 0:
        standard = Lattice.from_parameters(*Lattice(matrix).parameters).matrix
        candidate = np.linalg.solve(matrix, standard)
        if np.allclose(candidate @ candidate.T, np.eye(3), atol=1e-6):
            frame = candidate
    look_along_b = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])   # x -> x, y -> -z, z -> y (up)
    return frame @ look_along_b @ _rotation(1, VIEW_SPIN) @ _rotation(0, VIEW_TILT)


def _xyz(p: np.ndarray) -> dict[str, float]:
    return {"x": round(float(p[0]), 4), "y": round(float(p[1]), 4), "z": round(float(p[2]), 4)}


def _style_spec(style: str, color: str, radius: float) -> dict:
    if style == "sphere":
        return {"sphere": {"color": color, "radius": round(radius * BALL_SCALE["sphere"], 3)}}
    if style == "stick":
        return {"stick": {"color": color, "radius": STICK_RADIUS},
                "sphere": {"color": color, "radius": STICK_RADIUS}}
    return {"sphere": {"color": color, "radius": round(radius * BALL_SCALE["ball-stick"], 3)},
            "stick": {"color": color, "radius": STICK_RADIUS}}


# JavaScript added to the viewer: show an atom's label while the pointer is over it.
_HOVER_JS = """\tviewer_UNIQUEID.setHoverable({}, true, function(atom, viewer) {
\t\tif (!atom._hoverLabel) { atom._hoverLabel = viewer.addLabel(atom.properties.label,
\t\t\t{position: atom, backgroundColor: "black", backgroundOpacity: 0.75, fontColor: "white", fontSize: 12,
\t\t\tinFront: true}); }
\t}, function(atom, viewer) {
\t\tif (atom._hoverLabel) { viewer.removeLabel(atom._hoverLabel); delete atom._hoverLabel; }
\t});
"""


# ----------------------------------------------------------------------------------------------------------
# Script location
# ----------------------------------------------------------------------------------------------------------
def local_script() -> Path | None:
    """The local 3Dmol.js file if present (``ASSET_PATH``), else None."""
    return ASSET_PATH if ASSET_PATH.is_file() and ASSET_PATH.stat().st_size > 0 else None


@functools.cache
def _read_script(path: str, mtime: float) -> str:
    return Path(path).read_text(encoding="utf-8")


def _script_text(path: Path) -> str:
    return _read_script(str(path), path.stat().st_mtime)


def script_url() -> str:
    """URL from which ``view`` loads 3Dmol.js: a ``data:`` URI of the local copy (offline), or the CDN."""
    path = local_script()
    return CDN_URL if path is None else _data_uri(str(path), path.stat().st_mtime)


@functools.cache
def _data_uri(path: str, mtime: float) -> str:
    return "data:text/javascript;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


# ----------------------------------------------------------------------------------------------------------
# Public views
# ----------------------------------------------------------------------------------------------------------
def view(structure: Structure, *, style: Style = "ball-stick", supercell: int | Sequence[int] = (1, 1, 1),
         cell: CellSetting = "conventional", bonds: bool = True, show_cell: bool = True,
         width: int | str = 500, height: int | str = 400, color_scheme: str = "VESTA",
         js: str | None = None) -> py3Dmol.view:
    """A py3Dmol view of ``structure`` (displays itself in a notebook).

    Args:
        structure: the crystal.
        style: "ball-stick" (balls 0.5 × atomic radius + bonds), "sphere" (space filling, 1.0 × atomic
            radius) or "stick" (bonds, atoms as small spheres of the bond radius).
        supercell: repetitions along a, b, c (1–6 each, or one int for all three).
        cell: "conventional" / "primitive" standard setting (spglib, symprec 0.01 Å) or "as-is".
        bonds: draw bonds (covalent radii × 1.2, see ``find_bonds``).
        show_cell: draw the cell edges and a, b, c labels.
        width, height: pixels (int) or CSS lengths ("100%").
        color_scheme: "VESTA" or "Jmol".
        js: URL of 3Dmol.js; default the local copy as a data URI (offline), else the CDN.
    """
    if style not in STYLES:
        raise InvalidInputError(f"style must be one of {STYLES}, got {style!r}")
    require_sane(structure, "cannot show this structure")
    sc = _supercell(supercell)
    shown = cell_setting(structure, cell)
    colors = _element_colors(color_scheme)

    labels = [_site_label(site) for site in shown]
    site_idx, frac, cart = scene_atoms(shown, sc)
    frame = scene_frame(shown.lattice.matrix)
    cart = cart @ frame
    symbols = [labels[i][0] for i in site_idx]
    neighbours: list[list[int]] = [[] for _ in site_idx]
    if bonds:
        for i, j in find_bonds(symbols, cart):
            neighbours[i].append(j)
            neighbours[j].append(i)
    atoms = [
        {"elem": symbols[k], **_xyz(cart[k]), "bonds": neighbours[k], "bondOrder": [1] * len(neighbours[k]),
         "properties": {"label": f"{labels[i][1]}  ({f[0]:.3f}, {f[1]:.3f}, {f[2]:.3f})", "site": i}}
        for k, (i, f) in enumerate(zip(site_idx, frac))
    ]

    v = py3Dmol.view(width=width, height=height, js=js or script_url())
    v.addModel()
    v.getModel().addAtoms(atoms)
    for symbol in sorted(set(symbols)):
        v.setStyle({"elem": symbol}, _style_spec(style, colors.get(symbol, FALLBACK_COLOR), atomic_radius(symbol)))
    if show_cell:
        matrix = shown.lattice.matrix @ frame
        for start, end in _cell_edges(matrix, sc):
            v.addCylinder({"start": _xyz(start), "end": _xyz(end), "radius": 0.03, "color": CELL_COLOR,
                           "fromCap": 1, "toCap": 1})
        for name, vec in zip("abc", matrix):
            tip = vec * (1 + 1.2 / np.linalg.norm(vec))          # 1.2 Å beyond the end of the edge
            v.addLabel(name, {"position": _xyz(tip), "fontColor": "black", "backgroundOpacity": 0.0,
                              "fontSize": 14, "inFront": True, "alignment": "center"})
    v.startjs += _HOVER_JS
    v.setProjection("orthographic")
    v.zoomTo()
    v.zoom(ZOOM)
    return v


def view_html(structure: Structure, *, script: str | None = None, **options) -> str:
    """A self-contained HTML page showing ``structure`` (for ``streamlit.components.v1.html``).

    Takes the same keyword options as ``view``. 3Dmol.js is inlined from the local copy (about 0.5 MB),
    so the page works offline inside Streamlit's sandboxed iframe; with ``script="<url>"`` it is loaded
    from that URL instead (e.g. Streamlit static serving: "app/static/3Dmol-min.js"); with the local copy
    absent it comes from the CDN.
    """
    path = local_script() if script is None else None
    loader = script or CDN_URL
    v = view(structure, js=loader, **options)
    fragment = v.write_html()
    # py3Dmol names the viewer after the clock; name it after the content instead, so the same structure
    # and options give the same page (Streamlit then keeps the iframe, and caches hit).
    stable_id = "v" + hashlib.sha1(fragment.replace(v.uniqueid, "").encode()).hexdigest()[:16]
    fragment = fragment.replace(v.uniqueid, stable_id)
    head = ""
    if path is not None:
        code = _script_text(path).replace("</script", "<\\/script")
        # When the inline copy defined $3Dmol, tell py3Dmol's loader it is ready; otherwise ($3Dmolpromise
        # left undefined) the loader fetches the CDN copy.
        head = (f"<script>{code}</script>\n"
                "<script>if (typeof $3Dmol !== 'undefined') { var $3Dmolpromise = Promise.resolve(); }</script>\n")
    title = html_lib.escape(structure.composition.reduced_formula)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n{head}</head>\n"
            f"<body style=\"margin: 0; padding: 0; overflow: hidden;\">\n{fragment}\n</body></html>\n")


def model_atoms(html: str) -> list[dict]:
    """The atoms a page from ``view_html`` (or ``view(...).write_html()``) hands to 3Dmol.js.

    For tests and debugging: parses the JSON argument of the ``addAtoms`` call.
    """
    match = re.search(r"viewer_\w+\.getModel\(\)\.addAtoms\(", html)
    if match is None:
        raise ValueError("no 3Dmol model in this HTML")
    atoms, _ = json.JSONDecoder().raw_decode(html, match.end())
    return atoms
