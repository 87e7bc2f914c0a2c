"""3D view: atoms drawn (with boundary images), colours, bonds, cell settings, local 3Dmol.js, browser render."""
from __future__ import annotations

import base64
import shutil
from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core import view as V
from core.errors import InvalidInputError


FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def nacl(a: float = 5.64) -> Structure:
    """Conventional rock-salt cell: Na on fcc sites, Cl shifted by (½, 0, 0)."""
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, FCC + [[(x + 0.5) % 1, y, z] for x, y, z in FCC])


def wurtzite_gan() -> Structure:
    """GaN, P6_3mc, a = 3.19 Å, c = 5.19 Å, u = 0.377 (Ga–N ≈ 1.95 Å)."""
    u = 0.377
    return Structure(Lattice.hexagonal(3.19, 5.19), ["Ga", "Ga", "N", "N"],
                     [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]])


def triclinic() -> Structure:
    """Three atoms strictly inside a general triclinic cell, plus one on the a-face (x = 0)."""
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 78, 95, 112)
    return Structure(lattice, ["Si", "O", "O", "Mg"],
                     [[0.1, 0.2, 0.3], [0.4, 0.1, 0.7], [0.8, 0.6, 0.2], [0.0, 0.45, 0.55]])


def _style_colors(html: str) -> dict[str, str]:
    """Element -> sphere colour, from the setStyle calls of a page."""
    import json
    import re

    out = {}
    for m in re.finditer(r'setStyle\(\{"elem": "(\w+)"\},', html):
        spec, _ = json.JSONDecoder().raw_decode(html, m.end())
        out[m.group(1)] = spec["sphere"]["color"]
    return out


# ------------------------------------------------------------------------------------------------ atoms drawn
@pytest.mark.parametrize("supercell", [(1, 1, 1), (2, 1, 3), 2])
def test_rocksalt_shows_complete_cells(supercell):
    # Rock salt is a simple-cubic grid of ions with spacing a/2: n cells along an axis hold 2n + 1 planes.
    n = np.array([supercell] * 3 if isinstance(supercell, int) else supercell)
    atoms = V.model_atoms(V.view_html(nacl(), supercell=supercell))
    assert len(atoms) == int(np.prod(2 * n + 1))
    counts = Counter(a["elem"] for a in atoms)
    assert abs(counts["Na"] - counts["Cl"]) <= 1


def test_atom_count_is_sites_times_supercell_plus_face_images():
    s = triclinic()
    for sc in [(1, 1, 1), (2, 2, 2), (3, 1, 2)]:
        atoms = V.model_atoms(V.view_html(s, cell="as-is", supercell=sc))
        n1, n2, n3 = sc
        interior = 3 * n1 * n2 * n3          # three atoms strictly inside: one per cell
        on_a_face = (n1 + 1) * n2 * n3       # x = 0 also drawn at x = 1, ..., n1
        assert len(atoms) == interior + on_a_face
        assert Counter(a["elem"] for a in atoms)["Mg"] == on_a_face


def test_conventional_and_primitive_settings_of_fcc_copper():
    prim = Structure(Lattice.from_parameters(2.556, 2.556, 2.556, 60, 60, 60), ["Cu"], [[0, 0, 0]])
    conventional = V.model_atoms(V.view_html(prim, cell="conventional"))
    primitive = V.model_atoms(V.view_html(prim, cell="primitive"))
    assert len(conventional) == 8 + 6      # corners + face centres of the cubic cell
    assert len(primitive) == 8             # one atom, on all eight corners
    # the conventional cubic edge of fcc Cu is √2 × the primitive one (3.615 Å)
    assert V.cell_setting(prim, "conventional").lattice.a == pytest.approx(2.556 * 2 ** 0.5, rel=1e-3)


def test_view_preserves_distances_and_handedness_in_a_triclinic_cell():
    s = triclinic()
    atoms = V.model_atoms(V.view_html(s, cell="as-is"))
    site = [a["properties"]["site"] for a in atoms]
    xyz = np.array([[a["x"], a["y"], a["z"]] for a in atoms])
    first = {i: k for k, i in reversed(list(enumerate(site)))}   # first drawn image of each site
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            d_view = np.linalg.norm(xyz[first[i]] - xyz[first[j]])
            d_true = np.linalg.norm(s[i].coords - s[j].coords)   # both images sit in the home cell here
            assert d_view == pytest.approx(d_true, abs=1e-3)
    frame = V.scene_frame(s.lattice.matrix)
    assert np.allclose(frame @ frame.T, np.eye(3)) and np.linalg.det(frame) == pytest.approx(1.0)


def test_hexagonal_gan_bonds_are_ga_n_at_the_known_length():
    atoms = V.model_atoms(V.view_html(wurtzite_gan(), cell="conventional"))
    assert Counter(a["elem"] for a in atoms) == {"Ga": 3, "N": 2}   # Ga at z = 0 repeats at z = 1
    xyz = np.array([[a["x"], a["y"], a["z"]] for a in atoms])
    bonds = {(i, j) for i, a in enumerate(atoms) for j in a["bonds"]}
    assert bonds and all((j, i) in bonds for i, j in bonds)        # 3Dmol.js wants both directions
    for i, j in bonds:
        assert {atoms[i]["elem"], atoms[j]["elem"]} == {"Ga", "N"}
        assert 1.90 < np.linalg.norm(xyz[i] - xyz[j]) < 2.00
    assert all(a["bonds"] for a in atoms if a["elem"] == "N")


def test_no_metal_metal_bonds_in_salt_but_bonds_in_a_metal():
    atoms = V.model_atoms(V.view_html(nacl()))
    # each of the 54 nearest-neighbour Na–Cl contacts of the 3×3×3 grid is a bond, nothing else
    pairs = {tuple(sorted((i, j))) for i, a in enumerate(atoms) for j in a["bonds"]}
    assert len(pairs) == 3 * 3 * 3 * 2
    assert all(atoms[i]["elem"] != atoms[j]["elem"] for i, j in pairs)
    copper = Structure(Lattice.cubic(3.615), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    assert any(a["bonds"] for a in V.model_atoms(V.view_html(copper)))


def test_bonds_off_and_options_checked():
    assert not any(a["bonds"] for a in V.model_atoms(V.view_html(nacl(), bonds=False)))
    for bad in [dict(style="cartoon"), dict(supercell=(0, 1, 1)), dict(supercell=(1, 1)), dict(cell="niggli"),
                dict(color_scheme="rainbow")]:
        with pytest.raises(InvalidInputError):
            V.view_html(nacl(), **bad)
    with pytest.raises(InvalidInputError):
        V.view(Structure(Lattice.cubic(np.nan), ["Na"], [[0, 0, 0]]), cell="as-is")


def test_disordered_site_is_drawn_as_majority_species_with_occupancies_in_label():
    s = Structure(Lattice.cubic(4.0), [{"Fe": 0.7, "Co": 0.3}], [[0.5, 0.5, 0.5]])
    (atom,) = V.model_atoms(V.view_html(s, cell="as-is"))
    assert atom["elem"] == "Fe"
    assert "Fe:0.70" in atom["properties"]["label"] and "Co:0.30" in atom["properties"]["label"]


# ------------------------------------------------------------------------------------------------ colours
def test_element_colors_are_the_published_vesta_and_jmol_values():
    # Jmol's published CPK table: O FF0D0D, Na AB5CF2, Cl 1FF01F; VESTA's defaults: O (254,3,0), Na (249,220,60).
    jmol, vesta = V.element_colors("Jmol"), V.element_colors("VESTA")
    assert (jmol["O"], jmol["Na"], jmol["Cl"]) == ("#ff0d0d", "#ab5cf2", "#1ff01f")
    assert (vesta["O"], vesta["Na"]) == ("#fe0300", "#f9dc3c")
    assert len(vesta) > 100 and V.element_colors("vesta") == vesta


def test_page_colours_follow_the_chosen_scheme():
    for scheme in V.COLOR_SCHEMES:
        colours = _style_colors(V.view_html(nacl(), color_scheme=scheme))
        table = V.element_colors(scheme)
        assert colours == {"Na": table["Na"], "Cl": table["Cl"]}


def test_ball_radii_scale_with_atomic_radius():
    import json
    import re

    html = V.view_html(nacl(), style="sphere")
    radii = {m.group(1): json.JSONDecoder().raw_decode(html, m.end())[0]["sphere"]["radius"]
             for m in re.finditer(r'setStyle\(\{"elem": "(\w+)"\},', html)}
    # pymatgen's empirical atomic radii: Na 1.80 Å, Cl 1.00 Å; space filling touches at the 2.82 Å contact
    assert radii == {"Na": pytest.approx(1.80), "Cl": pytest.approx(1.00)}


# ------------------------------------------------------------------------------------------------ script source
def test_page_inlines_the_local_script_and_is_deterministic(tmp_path, monkeypatch):
    fake = tmp_path / "3Dmol-min.js"
    fake.write_text("/* local 3Dmol copy */ window.$3Dmol = {}; var s = '</script>';")
    monkeypatch.setattr(V, "ASSET_PATH", fake)
    html = V.view_html(nacl())
    assert "/* local 3Dmol copy */" in html
    assert "'<\\/script>'" in html                                 # cannot close the inline <script> early
    assert "var $3Dmolpromise = Promise.resolve()" in html
    assert V.view_html(nacl()) == html                            # same input, same page
    assert V.view_html(nacl(), supercell=2) != html
    served = V.view_html(nacl(), script="app/static/3Dmol-min.js")
    assert "local 3Dmol copy" not in served and "loadScriptAsync('app/static/3Dmol-min.js')" in served
    notebook = V.view(nacl()).write_html()
    uri = "data:text/javascript;base64,"
    encoded = notebook.split(uri, 1)[1].split("'", 1)[0]
    assert base64.b64decode(encoded) == fake.read_bytes()


def test_cdn_only_when_the_local_script_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "ASSET_PATH", tmp_path / "missing.js")
    html = V.view_html(nacl())
    assert f"loadScriptAsync('{V.CDN_URL}')" in html and "Promise.resolve()" not in html
    assert V.script_url() == V.CDN_URL


def test_shipped_asset_is_3dmol_when_present():
    path = V.local_script()
    if path is None:
        pytest.skip("app/static/3Dmol-min.js not fetched (make app/static/3Dmol-min.js)")
    text = path.read_text()
    assert "$3Dmol" in text and path.stat().st_size > 300_000


# ------------------------------------------------------------------------------------------------ real browser
@pytest.mark.browser
def test_pages_render_a_nonblank_canvas_in_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    playwright = pytest.importorskip("playwright.sync_api")
    if chromium is None or V.local_script() is None:
        pytest.skip("needs Debian chromium (make browser) and the local 3Dmol.js (make app/static/3Dmol-min.js)")
    from PIL import Image

    pages = {"streamlit": V.view_html(nacl()),
             "notebook": f"<html><body>{V.view(wurtzite_gan(), supercell=2).write_html()}</body></html>"}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 520, "height": 420})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda route: route.abort())          # offline: nothing may come from the network
        for name, html in pages.items():
            page.set_content(html)
            page.wait_for_function("document.querySelector('canvas') !== null", timeout=15_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / f"{name}.png"))
        browser.close()
    assert not errors
    for name in pages:
        pixels = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).reshape(-1, 3).astype(int)
        drawn = (pixels < 235).any(axis=1).mean()
        assert drawn > 0.03, f"{name}: canvas is blank"
    # NaCl in VESTA colours: yellow Na (249, 220, 60) shaded, so look for strongly yellow pixels
    pixels = np.asarray(Image.open(tmp_path / "streamlit.png").convert("RGB")).astype(int).reshape(-1, 3)
    yellow = (pixels[:, 0] > 150) & (pixels[:, 1] > 130) & (pixels[:, 2] < 90)
    assert yellow.mean() > 0.01
