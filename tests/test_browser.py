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
                "screen": 1500, "explore_screen": 1450, "score_uploads": 1500, "explore_default": 1450,
                "explore_two_runs": 1450, "tour": 3600}


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
            canvas = harness.viewer_canvas(page)                           # waits until 3Dmol has drawn
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


# ---- issue #18's must-shows: runs side by side, uploads with a disordered CIF, flagged rows, the tour -----
TOUR_SAMPLES = 20                  # app.tour.TOUR_REQUEST.num
HIDING_FLAGS = {"error", "invalid", "unphysical", "below_hull", "hull_lower_bound"}   # sanity.HIDDEN_BY_DEFAULT


def write_cifs(folder: Path) -> dict[str, Path]:
    """Four uploads: two ordinary crystals, LaN (the fake scorer's absurd 46.6 eV/atom, flagged unphysical)
    and a disordered (Na,K)Cl that no model can take."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    crystals = {
        "nacl.cif": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "cscl.cif": Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "lan.cif": Structure(Lattice.cubic(3.0), ["La", "N"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "disordered.cif": Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, structure in crystals.items():
        paths[name] = folder / name
        paths[name].write_text(str(CifWriter(structure)))
    return paths


def scores_csv(page):
    """The Score page's 'Download scores (CSV)' as a DataFrame (what a user would open in a spreadsheet)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(harness.download(page, "Download scores (CSV)")), keep_default_na=True)


def hiding(flags) -> bool:
    return bool(set(str(flags).split(";")) & HIDING_FLAGS) if isinstance(flags, str) else False


def alert(page, text: str):
    """The alert box (success / warning) whose text contains ``text``."""
    return page.locator('[data-testid="stAlert"]').filter(has_text=text)


def test_runs_side_by_side_uploads_flagged_rows_and_tour(setup):
    """Issue #18's must-shows, through the flows a user takes:

    two Generate runs (base, then rl-fom picked in the sidebar) stay side by side on Generate, Score and
    Explore with a run filter; four files uploaded at once on Score (two ordinary crystals, an absurd
    LaN, a disordered CIF) score the readable ones and explain the disordered one, which the uploader's
    delete button removes; Explore opens with every flagged row hidden, says how many, and one toggle
    shows them as crosses; the "Start here" tour is walked from tokens to what RL changes.
    """
    tmp, env, args, _ = setup
    if "CFRL_CHECKPOINTS_DIR" in env:
        pytest.skip("needs the shipped base and rl-fom checkpoints (the tour samples both)")
    from app_support import ABSURD_E_HULL_EV, expected
    from core.export import read_structures

    cifs = write_cifs(tmp / "uploads")
    env = {**env, "CFRL_APP_DATA_DIR": str(tmp / "data-issue18")}
    with harness.browser() as chromium, harness.AppServer(env, tmp / "server-issue18.log", args=args) as server:
        page = chromium.new_page(viewport=VIEWPORT, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        page.get_by_role("heading", name="Generate", exact=True).wait_for()
        harness.wait_idle(page)

        # ---- (a) two Generate runs: base, then rl-fom chosen in the sidebar ----------------------------
        harness.set_number(page, "Samples", SAMPLES)
        page.get_by_role("button", name="Generate").click()
        page.get_by_text(re.compile(r"Progress: scoring \d+/\d+ · .* \(finished\)")).wait_for()
        harness.wait_idle(page)
        sidebar_model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
        harness.choose(page, sidebar_model, "rl-fom")
        assert sidebar_model.locator("input").input_value() == "rl-fom"
        page.get_by_role("button", name="Generate").click()
        # the caption names the new run once it exists; from then on the progress line is the new job's
        page.get_by_text(re.compile(r"2 generated run\(s\) in this session")).wait_for()
        page.get_by_text(re.compile(r"Progress: scoring \d+/\d+ · .* \(finished\)")).wait_for()
        harness.wait_idle(page)
        run_picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Run").last
        assert run_picker.locator("input").input_value() == "2. rl-fom"                # the new run shown first
        assert harness.open_options(page, run_picker) == ["2. rl-fom", "1. base"]        # the first run kept
        page.keyboard.press("Escape")

        # ---- (b) uploads on Score: three readable CIFs and a disordered one, at once ------------------
        harness.open_page(page, "Score")
        page.get_by_text("Add your own structures").click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in cifs.values()])
        bad = alert(page, "disordered.cif")
        bad.wait_for()
        harness.wait_idle(page)
        for name in ("nacl.cif", "cscl.cif", "lan.cif"):
            assert alert(page, name).inner_text().strip().endswith(f"{name}: 1 structure(s) added")
        message = bad.inner_text()
        assert "nothing added" in message and "disordered: partial occupancies" in message, message
        assert "Order it first" in message and message.count("disordered.cif") == 1       # the fix, the name once
        page.get_by_role("button", name="Score 3 structure(s)").click()
        page.get_by_role("button", name="Score 0 structure(s)").wait_for()              # every readable one scored
        harness.wait_idle(page)
        assert not page.get_by_text(re.compile(r"ended with an error")).count()
        total = re.search(r"(\d+) structures · (\d+) buildable · (\d+) scored · (\d+) with errors",
                          harness.caption(page, "buildable"))
        scores = scores_csv(page)
        assert set(scores["run"]) >= {"1. base", "2. rl-fom", "nacl.cif", "cscl.cif", "lan.cif"}
        assert "disordered.cif" not in set(scores["run"])                              # never sent to a scorer
        assert int(total[3]) == len(scores) and int(total[2]) == int(total[3]), total[0]   # nothing buildable left unscored
        for name, path in cifs.items():
            if name == "disordered.cif":
                continue
            row = scores[scores["run"] == name].iloc[0]
            structure = read_structures(path.read_bytes(), name)[0][0]                    # as the app read it
            assert row["band_gap_ev"] == pytest.approx(expected(structure)["band_gap_ev"])
            assert row["eps_elec"] == pytest.approx(expected(structure)["eps_elec"])
        lan = scores[scores["run"] == "lan.cif"].iloc[0]
        assert lan["e_above_hull"] == pytest.approx(ABSURD_E_HULL_EV) and "unphysical" in lan["flags"]
        shot(page, "score_uploads")
        # removing the bad file from the uploader removes its row and message; the scored ones stay
        page.locator('[data-testid="stFileUploader"]').get_by_text("disordered.cif", exact=True).locator(
            "xpath=ancestor::*[.//button][1]").get_by_role("button").first.click()
        bad.wait_for(state="detached")
        harness.wait_idle(page)
        after = re.search(r"(\d+) structures · (\d+) buildable · (\d+) scored", harness.caption(page, "buildable"))
        assert int(after[1]) == int(total[1]) - 1 and int(after[3]) == int(total[3])
        assert alert(page, "nacl.cif").count() == 1

        # ---- (c) Explore's default view: no flagged row on the plot, the front or the picker -----------
        flagged_ids = set(scores.loc[scores["flags"].map(hiding), "id"].astype(int))
        lan_id = int(lan["id"])
        assert lan_id in flagged_ids
        harness.open_page(page, "Explore")
        page.locator(".js-plotly-plot").first.wait_for()
        note = harness.caption(page, "Showing")
        counted = re.search(r"Showing (\d+) of (\d+) scored structures · (\d+) flagged by the scorer hidden", note)
        assert counted, note
        assert int(counted[2]) == len(scores) and int(counted[3]) == len(flagged_ids)
        assert "unphysical" in note
        toggle = page.get_by_role("switch", name=f"Show flagged ({len(flagged_ids)})", exact=True)
        assert not toggle.is_checked()
        points = harness.plot_ids(page, "structures", "no E<sub>hull</sub>")
        assert points and not points & flagged_ids
        assert not harness.plot_ids(page, "Pareto front") & flagged_ids
        picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Structure")
        options = harness.open_options(page, picker)
        page.keyboard.press("Escape")
        assert not [o for o in options if " LaN" in o or "flagged" in o], options
        harness.wait_idle(page)
        shot(page, "explore_default")
        page.get_by_text(f"Show flagged ({len(flagged_ids)})", exact=True).click()        # the one toggle
        harness.wait_idle(page)
        assert toggle.is_checked() and "shown as crosses" in harness.caption(page, "Showing")
        assert lan_id in harness.plot_ids(page, "structures")
        symbols = page.evaluate("""(id) => { const t = document.querySelectorAll('.js-plotly-plot')[0]._fullData
                                               .find(t => t.name === 'structures');
                                             return t.marker.symbol[t.customdata.findIndex(r => +r[0] === id)]; }""",
                                lan_id)
        assert symbols == "x"                                                         # a flagged row is a cross
        assert not harness.plot_ids(page, "Pareto front") & flagged_ids              # and never on the front
        page.get_by_text(f"Show flagged ({len(flagged_ids)})", exact=True).click()
        harness.wait_idle(page)

        # ---- (a) continued: the run filter on Explore narrows to one run, then shows both ------------
        by_run = {run: set(scores.loc[scores["run"] == run, "id"].astype(int)) - flagged_ids
                  for run in ("1. base", "2. rl-fom")}
        page.get_by_text("Filter by run, elements, formula, symmetry").click()
        runs = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs")
        before = harness.caption(page, "Showing")
        harness.choose(page, runs, "1. base")
        harness.wait_for_change(lambda: harness.caption(page, "Showing"), before)
        only_base = harness.plot_ids(page, "structures", "no E<sub>hull</sub>")
        assert only_base and only_base <= by_run["1. base"]
        before = harness.caption(page, "Showing")
        harness.choose(page, runs, "2. rl-fom")
        harness.wait_for_change(lambda: harness.caption(page, "Showing"), before)
        both = harness.plot_ids(page, "structures", "no E<sub>hull</sub>")
        assert both & by_run["1. base"] and both & by_run["2. rl-fom"] and both <= by_run["1. base"] | by_run["2. rl-fom"]
        shot(page, "explore_two_runs")

        # ---- (d) the "Start here" tour, step by step --------------------------------------------------
        harness.open_page(page, "Start here")
        for step in ("1 · Tokens", "2 · Sampling", "3 · Scoring", "4 · Pareto", "5 · What RL changes"):
            page.get_by_role("heading", name=re.compile(re.escape(step))).wait_for()
        assert page.get_by_text("Fm-3m").count()                                      # step 1: NaCl's tokens
        page.get_by_role("button", name="Sample with base").click()
        page.get_by_text(re.compile(rf"Run \d+\. base: {TOUR_SAMPLES} samples")).wait_for()
        rl_button = page.get_by_role("button", name="Sample with rl-fom")
        from playwright.sync_api import expect

        expect(rl_button).to_be_enabled(timeout=TIMEOUT_MS)                            # enabled once base is scored
        harness.wait_idle(page)
        built = int(re.search(r"(\d+) buildable", harness.caption(page, f"{TOUR_SAMPLES} samples"))[1])
        page.get_by_text(re.compile(rf"Of {built} scored samples, \d+ can be judged")).wait_for()
        page.locator(".js-plotly-plot").first.wait_for()                              # step 4: the Pareto plot
        rl_button.click()
        page.get_by_text("That is the tour.").wait_for()
        expect(rl_button).to_be_enabled(timeout=TIMEOUT_MS)
        harness.wait_idle(page)
        rates = page.locator('[data-testid="stTable"]').inner_text()
        header = rates.split("Samples")[0].split()                                   # one column per model
        assert header[-2:] == ["base", "rl-fom"], rates
        assert re.search(rf"Samples\s+{TOUR_SAMPLES}\s+{TOUR_SAMPLES}", rates), rates
        assert page.locator(".js-plotly-plot").count() == 2                           # step 5: the comparison plane
        shot(page, "tour")

        # nothing was replaced along the way: Generate still holds the first two runs next to the tour's
        harness.open_page(page, "Generate")
        kept = harness.open_options(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Run").last)
        page.keyboard.press("Escape")
        assert {"1. base", "2. rl-fom"} <= set(kept) and len(kept) == 4, kept
        page.close()
