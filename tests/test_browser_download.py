"""The Models page in a real browser: download the alex20 base checkpoint from a local hub, pick it, sample.

A stub hub on 127.0.0.1 (``tests/hub_server.py``, via ``HF_ENDPOINT``) serves the paper-config fixture
checkpoint as ``zdcao/CrystalFormer/alex20/PBE/epoch_005500.pkl``. The app runs with its default
``HF_HUB_OFFLINE=1``: the Download button must still reach the hub, because a click is an explicit request.
The user opens Models, reads the memory the paper config needs, clicks Download, watches it finish, uses it
in the sidebar and generates two crystals with it on the Generate page. Screenshot: docs/screenshots/models.png.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import harness
from core import settings
from hub_server import HubStub, resolve_path

REPO = Path(__file__).resolve().parent.parent
PKL = settings.fixtures_dir() / "crystalformer" / "paper" / "perturbed" / "epoch_000000.pkl"
VIEWPORT = {"width": 1360, "height": 900}

pytestmark = pytest.mark.browser


def test_download_in_the_models_page_then_generate_with_it(tmp_path):
    why = harness.chromium_missing()
    if why:
        pytest.skip(f"real-browser test skipped: {why}")
    if not PKL.is_file():
        pytest.skip(f"paper fixture checkpoint not found at {PKL} (set CFRL_FIXTURES_DIR)")
    from app_support import make_checkpoint

    make_checkpoint(tmp_path / "checkpoints", "base")        # the app starts with one (tiny) checkpoint
    hub = HubStub({resolve_path("zdcao/CrystalFormer", "alex20/PBE/epoch_005500.pkl"): PKL.read_bytes()}).start()
    env = {"CFRL_CHECKPOINTS_DIR": str(tmp_path / "checkpoints"), "CFRL_APP_DATA_DIR": str(tmp_path / "data"),
           "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
           "CFRL_APP_SCORER": f"{REPO / 'tests' / 'app_support.py'}:fake_score_iter"}
    try:
        with harness.browser() as chromium, harness.AppServer(env, tmp_path / "server.log") as server:
            page = chromium.new_page(viewport=VIEWPORT)
            page.set_default_timeout(300_000)
            page.goto(server.url)
            page.get_by_role("heading", name="Generate", exact=True).wait_for()
            harness.wait_idle(page)
            harness.open_page(page, "Models")
            page.get_by_text(re.compile(r"4,833,575 parameters, 18 MB of float32 weights; sampling needs about")).wait_for()
            page.get_by_role("button", name="Download").first.click()   # alex20 base is the catalogue's first item
            page.get_by_text(re.compile(r"Downloaded alex20-base to .*epoch_005500\.pkl \(19\.4 MB, checked against "
                                        r"the hub's ETag\)")).wait_for()
            harness.wait_idle(page)
            target = tmp_path / "checkpoints" / "alex20-base" / "epoch_005500.pkl"
            assert target.read_bytes() == PKL.read_bytes()
            assert "Apache-2.0" in (target.parent / "MODEL_CARD.md").read_text()
            harness.screenshot(page, REPO / "docs" / "screenshots" / "models.png", height=1300)

            page.get_by_role("button", name="Use it in the sidebar").click()
            harness.wait_idle(page)
            sidebar_model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.locator("input")
            assert sidebar_model.input_value() == "alex20-base"

            harness.open_page(page, "Generate")
            samples = page.get_by_role("spinbutton", name="Samples", exact=True)
            samples.fill("2")
            samples.blur()
            page.get_by_role("button", name="Generate").click()
            try:
                page.get_by_text(re.compile(r"alex20-base/epoch_005500, \d+ samples in .* · [\d.]+ s")).wait_for()
            except Exception:   # say what the page shows instead of a bare timeout
                page.screenshot(path=str(tmp_path / "generate_failed.png"), full_page=True)
                log = (tmp_path / "server.log").read_text()[-2000:]
                raise AssertionError(f"no generation caption; screenshot {tmp_path / 'generate_failed.png'}; "
                                     f"server log tail: {log}") from None
            harness.wait_idle(page)
            assert page.get_by_text("Buildable", exact=True).count()
    finally:
        hub.stop()
    assert any(method == "GET" for method, _, _ in hub.log)
