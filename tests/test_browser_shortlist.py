"""Shortlist notes typed into the real data editor (Debian Chromium via Playwright) are in the database as
soon as the cell is left, also when another session changes the list between two edits: the wiring AppTest
cannot reach (the grid's own on_change), and the path where a Save click used to be dropped."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from app import harness
from core.shortlist import Shortlist

pytestmark = pytest.mark.browser


def crystal(el: str) -> Structure:
    return Structure(Lattice.cubic(4.1), [el, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def edit_notes(page, row: int, entry_id: int, text: str) -> None:
    """Type ``text`` into the Notes cell of ``row`` (which must show ``entry_id``) and commit it with Enter."""
    heads = harness.poll(lambda: (s := harness.grid_state(page)) and s["heads"], "the grid has no headers")
    editor = harness.open_cell_editor(page, row, "Notes", heads["Notes"], ("#", str(entry_id)))
    editor.fill(text)
    page.keyboard.press("Enter")


def test_notes_typed_in_the_grid_are_stored_when_the_cell_is_left(tmp_path):
    why = harness.chromium_missing()
    if why:
        pytest.skip(f"real-browser test skipped: {why}")
    from app_support import make_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    store = Shortlist(data / "shortlist.sqlite")
    for el in ("Cs", "Rb", "K"):
        store.add(crystal(el), notes=f"{el} note")
    make_checkpoint(tmp_path / "checkpoints", "base")
    env = {"CFRL_APP_DATA_DIR": str(data), "CFRL_CHECKPOINTS_DIR": str(tmp_path / "checkpoints")}
    args = ["--scorer", f"{harness.REPO_ROOT / 'tests' / 'app_support.py'}:fake_score_iter"]
    with harness.browser() as chromium, harness.AppServer(env, tmp_path / "server.log", args=args) as server:
        page = chromium.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True).new_page()
        page.set_default_timeout(120_000)
        page.goto(server.url)
        page.get_by_role("heading", name="Generate", exact=True).wait_for()
        harness.open_page(page, "Shortlist")
        page.get_by_text("saved as soon as you leave the cell").wait_for()
        assert page.get_by_role("button", name=re.compile(r"^Save")).count() == 0

        edit_notes(page, 1, 2, "first edit, saved on Enter")
        harness.poll(lambda: store.get(2).notes == "first edit, saved on Enter",
                     f"entry #2 still holds {store.get(2).notes!r} after Enter")
        page.get_by_text(re.compile(r"Saved notes & tags of #2")).first.wait_for()
        with page.expect_download() as started:                 # a download between two edits, then a pause
            page.get_by_role("button", name=re.compile(r"CSV \(all 3\)")).click()
        assert "first edit, saved on Enter" in Path(started.value.path()).read_text()
        page.wait_for_timeout(2000)

        store.remove(1)                       # another session: every row moves up, and one is added
        store.add(crystal("Na"), notes="Na note")
        harness.open_page(page, "Generate")
        harness.open_page(page, "Shortlist")
        edit_notes(page, 1, 3, "second edit, after the list changed")
        harness.poll(lambda: store.get(3).notes == "second edit, after the list changed",
                     f"entry #3 still holds {store.get(3).notes!r} after Enter")
        assert [store.get(i).notes for i in (2, 3, 4)] == ["first edit, saved on Enter",
                                                            "second edit, after the list changed", "Na note"]
        assert page.locator('[data-testid="stException"]').count() == 0
