"""The real app in a real browser (Debian Chromium driven by Playwright).

One walk through what a user does: generate in space group 225, score, click a point of the Pareto
plot, see a drawn 3D structure, keep it on the shortlist, compare two models, fine-tune for two PPO
steps and pick the result in the sidebar, open a large screen's folder and see its rows on Explore,
restart the app, find the shortlist entry still there, and download the shortlist as a CIF zip that
pymatgen reads back. Screenshots of every page go to docs/screenshots/.

Model: the shipped ``checkpoints/base`` when present, else a tiny untrained checkpoint. Scoring: the
exact fake of ``app_support`` (the real pipeline is tested through AppTest in test_app_pages.py);
set CFRL_BROWSER_REAL_SCORING=1 to score with the real engine instead. Fine-tuning rewards with
``app.harness.fake_reward``; the screen (16 samples, in this process, no Ray) is scored by
``test_app_screen.ExactScorer``.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest

from app import harness
from core.screen import ScreenSpec, load_screen, run_screen

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1360, "height": 900}
TIMEOUT_MS = 240_000
SAMPLES = 8
SCREEN_SAMPLES = 16

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    why = harness.chromium_missing()
    if why:
        pytest.skip(f"real-browser test skipped: {why}")
    from app_support import make_checkpoint

    tmp = tmp_path_factory.mktemp("browser")
    env = {"CFRL_APP_DATA_DIR": str(tmp / "data")}
    args = ["--reward", "app.harness:fake_reward"]     # app/main.py's stand-in arguments (app.harness.use_stand_ins)
    checkpoint = REPO / "checkpoints" / "base"
    if not (checkpoint / "params.npz").exists():
        checkpoint = make_checkpoint(tmp / "checkpoints", "base")
        env["CFRL_CHECKPOINTS_DIR"] = str(tmp / "checkpoints")
    if os.environ.get("CFRL_BROWSER_REAL_SCORING") != "1":
        args += ["--scorer", f"{REPO / 'tests' / 'app_support.py'}:fake_score_iter"]
    screen = tmp / "sg225"
    run_screen(ScreenSpec(str(checkpoint), spacegroups="225", num=SCREEN_SAMPLES, batch_size=SCREEN_SAMPLES, seed=1,
                          scorer="test_app_screen:ExactScorer"), screen, use_ray=False, progress=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return tmp, env, args, screen


SHOT_HEIGHTS = {"explore": 1450, "compare": 1450, "shortlist": 1300, "learn": 1300, "finetune": 1450,
                "screen": 1500, "explore_screen": 1450}


def shot(page, name: str) -> None:
    harness.screenshot(page, SHOTS / f"{name}.png", height=SHOT_HEIGHTS.get(name))


def placed(page) -> int:
    """Points drawn on the Explore plot (structures with both E_g and ε_elec, with or without E_hull)."""
    return sum(t["n"] for t in harness.plotly_traces(page) if t["name"] in ("structures", "no E<sub>hull</sub>"))


def test_generate_score_click_view_shortlist_restart_export(setup):
    tmp, env, args, screen = setup
    log = tmp / "server.log"
    with harness.browser() as chromium:
        # ---- first server: generate, score, explore, shortlist -------------------------------------
        with harness.AppServer(env, log, args=args) as server:
            page = chromium.new_page(viewport=VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url)
            page.get_by_role("heading", name="Generate", exact=True).wait_for()
            harness.wait_idle(page)
            picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Space group").locator("input")
            assert picker.input_value() == "225 Fm-3m (cubic)"                # the default space group
            samples = page.get_by_role("spinbutton", name="Samples", exact=True)
            samples.fill(str(SAMPLES))
            samples.blur()
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("Buildable", exact=True).wait_for()
            page.get_by_text(re.compile(r"Progress: scoring \d+/\d+ · .* \(finished\)")).wait_for()
            harness.wait_idle(page)
            shot(page, "generate")

            harness.open_page(page, "Score")
            assert page.get_by_text(re.compile(r"\d+ scored")).count()
            shot(page, "score")

            harness.open_page(page, "Explore")
            page.locator(".js-plotly-plot").first.wait_for()
            clicked = harness.click_plot_point(page, "Pareto front", point=0)
            chosen_id = int(float(clicked["customdata"][0][0]))
            harness.wait_idle(page)
            heading = page.get_by_role("heading", name=re.compile(rf" · #{chosen_id} · "))
            heading.wait_for()
            formula = heading.inner_text().split(" · ")[0].strip()
            canvas = harness.viewer_canvas(page)
            page.wait_for_timeout(1500)                                   # let 3Dmol finish drawing
            assert harness.canvas_colours(canvas.screenshot()) > 20, "the 3D viewer canvas is blank"
            assert "selected" in [t["name"] for t in harness.plotly_traces(page)]
            placed_before = placed(page)
            shot(page, "explore")
            charts = page.locator(".js-plotly-plot").count()                # the XRD tab is computed when opened
            page.get_by_role("tab", name="XRD pattern").click()
            page.locator(".js-plotly-plot").nth(charts).wait_for()
            harness.wait_idle(page)

            page.get_by_label("Notes").fill("browser test candidate")
            page.get_by_label("Tags (comma-separated)").fill("e2e")
            page.get_by_role("button", name="Add to shortlist").click()
            page.get_by_text(re.compile(r"to the shortlist as #1")).wait_for()

            for title in ("Compare", "Learn", "Fine-tune"):
                harness.open_page(page, title)
                if title == "Compare":
                    number = page.get_by_role("spinbutton", name="Samples per model", exact=True)
                    number.fill("4")
                    number.blur()
                    page.get_by_role("button", name="Run comparison").click()
                    page.get_by_text(re.compile(r"Comparison: scoring \d+/\d+ · .*\(finished\)")).wait_for()
                    harness.wait_idle(page)
                    page.locator(".js-plotly-plot").nth(1).wait_for()
                if title == "Learn":
                    page.get_by_role("button", name="Write one crystal").click()
                    page.get_by_text(re.compile(r"log p = ")).wait_for()
                    harness.wait_idle(page)
                if title == "Fine-tune":
                    for label, value in (("PPO steps", "2"), ("Batch (crystals/step)", "2")):
                        field = page.get_by_role("spinbutton", name=label, exact=True)
                        field.fill(value)
                        field.blur()
                    page.get_by_label("Save as").fill("browser-ppo")
                    page.get_by_role("button", name="Start fine-tuning").click()
                    page.get_by_text(re.compile(r"Saved as browser-ppo after 2 PPO steps")).wait_for()
                    harness.wait_idle(page)
                    page.locator(".js-plotly-plot").first.wait_for()
                shot(page, title.lower().replace("-", ""))
            page.get_by_role("button", name="Use it in the sidebar").click()
            harness.wait_idle(page)
            sidebar_model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.locator("input")
            assert sidebar_model.input_value() == "browser-ppo (fine-tuned)"

            # ---- a large screen's folder joins the session's structures ---------------------------
            harness.open_page(page, "Generate")
            page.get_by_text("Open large-screen results").click()
            page.get_by_label("Screen folder").fill(str(screen))
            page.get_by_role("button", name="Open screen").click()
            page.get_by_text(re.compile(rf"{SCREEN_SAMPLES} rows \(1/1 batches, finished\)")).wait_for()
            harness.wait_idle(page)
            shot(page, "screen")
            harness.open_page(page, "Explore")
            page.get_by_text(re.compile(rf"\({SAMPLES + SCREEN_SAMPLES} in the session\)")).wait_for()
            page.locator(".js-plotly-plot").first.wait_for()
            screen_rows = load_screen(screen, structures=False)
            assert placed(page) - placed_before == int(screen_rows["fom_ev"].notna().sum())   # each scored screen row is a point
            shot(page, "explore_screen")
            page.close()   # frees its WebGL contexts (Chromium keeps a bounded number alive)
        # ---- second server on the same data: the shortlist survived --------------------------------
        with harness.AppServer(env, log, args=args) as server:
            page = chromium.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url)
            page.get_by_role("heading", name="Generate", exact=True).wait_for()
            harness.open_page(page, "Shortlist")
            page.get_by_text("1 entry in").wait_for()
            entry = page.locator('[data-testid="stSelectbox"]').filter(has_text="Show entry").locator("input")
            assert entry.input_value() == f"#1 {formula} (base)"
            page.get_by_role("heading", name=re.compile(rf"^{re.escape(formula)} · shortlist #1")).wait_for()
            try:
                harness.viewer_canvas(page)
            except TimeoutError:   # say what the page holds instead of a bare timeout
                page.screenshot(path=str(tmp / "no_viewer_canvas.png"), full_page=True)
                frames = [(f.url, f.locator("canvas").count(), f.content()[:300]) for f in page.frames[1:]]
                raise AssertionError(f"no 3D viewer canvas after the restart; iframes {page.locator('iframe').count()}, "
                                     f"frames {frames}; screenshot {tmp / 'no_viewer_canvas.png'}") from None
            page.wait_for_timeout(1000)
            shot(page, "shortlist")
            with page.expect_download() as download:
                page.get_by_role("button", name=re.compile(r"CIF zip")).click()
            data = Path(download.value.path()).read_bytes()

    from pymatgen.io.cif import CifParser

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        cifs = [n for n in archive.namelist() if n.endswith(".cif")]
        assert len(cifs) == 1
        structures = CifParser.from_str(archive.read(cifs[0]).decode()).parse_structures(primitive=False)
    assert structures[0].composition.reduced_formula == formula
