"""Opening a large screen's output folder in the app (issue 8: "the app can open a finished or running
screen's output folder and explore it like its own samples").

A tiny in-process screen (tiny untrained checkpoint, no Ray) is scored by ``ExactScorer``, which gives
every pipeline column by ``app_support``'s closed formulas; the tests then open the folder from the
Generate page and check the rows, their numbers, the Explore ranking and the shortlist against values
computed here from the stored structures.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.pool import SCREEN, Pool
from app.uploads import open_screen
from app_support import expected, fake_score_iter, make_checkpoint
from core.screen import ScreenSpec, load_screen, run_screen
from test_app_pages import button, env, start, texts  # noqa: F401 - env is a fixture

BATCH = 32


class ExactScorer:
    """A screen scorer (``ScreenSpec.scorer`` hook) with ``app_support.fake_score_iter``'s exact rows."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def score(self, items):
        rows = [None] * len(items)
        built = [k for k, s in enumerate(items) if not isinstance(s, Exception)]
        for k, row in fake_score_iter([items[k] for k in built]):
            rows[built[k]] = row
        for k, item in enumerate(items):
            if rows[k] is None:
                rows[k] = {"formula": None, "error": str(item)}
        return rows


def spec(checkpoint) -> ScreenSpec:
    return ScreenSpec(str(checkpoint), spacegroups="225", num=2 * BATCH, batch_size=BATCH, seed=3,
                      scorer=f"{__name__}:ExactScorer")


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """A finished two-batch screen of a tiny checkpoint in SG 225, and its rows as stored."""
    root = tmp_path_factory.mktemp("screen")
    checkpoint = make_checkpoint(root, "tiny", seed=5)
    out = root / "sg225"
    result = run_screen(spec(checkpoint), out, use_ray=False, progress=False)
    assert result.complete
    return out, load_screen(out)


def built_rows(frame):
    return frame[frame["structure"].notna()]


def test_open_screen_from_generate_then_explore_and_shortlist(env, screen):
    folder, rows = screen
    built = built_rows(rows)
    assert len(built) > 0                                                    # the tiny model builds some crystals
    at = start("generate")
    at.text_input(key="screen-folder").input(str(folder))
    button(at, "Open screen").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert f"**screen sg225** · {len(rows)} rows (2/2 batches, finished)" in texts(at.markdown)

    pool = at.session_state["pool"]
    assert pool.ids(SCREEN) == pool.ids() and len(pool.ids()) == len(rows)
    frame = pool.scored_frame()
    assert int(frame["scored"].sum()) == len(built)
    foms = {}
    for entry_id in pool.ids():
        entry, row = pool.entries[entry_id], frame.loc[entry_id]
        assert entry.source == "screen sg225" and entry.spacegroup == 225
        if entry.structure is None:
            assert row["status"].startswith("not buildable")
            continue
        want = expected(entry.structure)                                     # closed formulas on the stored crystal
        assert row["fom_ev"] == pytest.approx(want["fom_ev"]) and row["e_above_hull"] == pytest.approx(want["e_above_hull"])
        foms[entry_id] = want["fom_ev"]
    stored = dict(zip(rows["sample_id"], rows["token_string"]))
    assert all(pool.entries[i].token_string == stored[frame.loc[i, "sample_id"]] for i in foms)

    at.switch_page("../pages/explore.py").run()
    assert not at.exception and at.get("plotly_chart"), texts(at.info) + texts(at.warning)
    pick = at.selectbox(key="explore-pick")
    from app.flags import annotate

    trusted = annotate(frame)["trusted"]
    ehull = frame["e_above_hull"]
    # the default view: flagged rows hidden and E_hull <= 1 eV/atom (the slider's default); best FoM first
    judged = {i: fom for i, fom in foms.items() if trusted.loc[i] and ehull.loc[i] <= 1.0}
    best = max(judged or foms, key=(judged or foms).get)
    assert pick.value == best                                                # best FoM of the judged rows first
    from core.shortlist import Shortlist
    from core.structure_check import structure_problem

    button(at, "Add to shortlist").click().run()
    listing = Shortlist().list()
    problem = structure_problem(pool.entries[best].structure)
    if problem is None:
        assert list(listing["source"]) == ["screen sg225"]
        assert listing.loc[0, "fom_ev"] == pytest.approx(foms[best])
    else:   # the exact scorer judges every cell valid; the shortlist's gate refuses a crushed one, saying why
        shown = texts(at.error) + texts(at.warning)
        assert listing.empty and f"Cannot add to the shortlist: cannot shortlist this structure: {problem}" in shown, shown


def test_folders_that_are_not_screens_are_explained_and_nothing_is_lost(env, tmp_path):
    from pymatgen.core import Lattice, Structure

    pool = Pool()
    pool.add_structures([Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])], source="mine.cif")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    at = start("generate", {"pool": pool})
    for typed, message in ((str(tmp_path / "empty"), "is not a screen folder (no manifest.json)"),
                           (str(tmp_path / "nowhere"), "does not exist"),
                           (str(tmp_path / "notes.txt"), "is a file, not a screen folder"),
                           ("  ", "type the folder a screen wrote")):
        at.text_input(key="screen-folder").input(typed)
        button(at, "Open screen").click().run()
        assert not at.exception and message in texts(at.warning), (typed, texts(at.warning))
    assert [e.formula for e in pool.entries.values()] == ["CsCl"] and not pool.screens


def test_row_limit_keeps_the_pareto_front_then_the_best_fom(screen):
    folder, rows = screen
    built = built_rows(rows)
    values = {int(r["sample_id"]): expected(r["structure"]) for _, r in built.iterrows()}
    front = {i for i, a in values.items()
             if not any(b["band_gap_ev"] >= a["band_gap_ev"] and b["eps_elec"] >= a["eps_elec"]
                        and (b["band_gap_ev"], b["eps_elec"]) != (a["band_gap_ev"], a["eps_elec"]) for b in values.values())}
    limit = len(front) + 3
    rest = sorted(set(values) - front, key=lambda i: (-values[i]["fom_ev"], i))[:3]
    pool = Pool()
    report = open_screen(pool, str(folder), limit)
    assert report.error is None and (report.rows, report.added) == (len(rows), limit)
    assert f"the best {limit} (Pareto front, then FoM) of {len(rows)}" in report.describe()
    kept = pool.scored_frame()["sample_id"]
    assert set(kept) == front | set(rest)
    assert np.all(np.diff(kept.to_numpy()) > 0)                              # still in sample order


def test_a_running_screen_opens_and_reload_shows_new_batches(env, screen, tmp_path):
    folder, _ = screen
    checkpoint = load_screen(folder, structures=False).attrs["spec"]["checkpoint"]
    out = tmp_path / "live"

    def stop_after_one(batch_id, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_screen(spec(checkpoint), out, use_ray=False, progress=False, on_batch=stop_after_one)
    at = start("generate")
    at.text_input(key="screen-folder").input(str(out))
    button(at, "Open screen").click().run()
    assert f"**screen live** · {BATCH} rows (1/2 batches, interrupted)" in texts(at.markdown)
    pool = at.session_state["pool"]
    assert len(pool.ids(SCREEN)) == BATCH
    run_screen(spec(checkpoint), out, use_ray=False, progress=False)           # resume: the second batch
    button(at, "Reload").click().run()
    assert f"**screen live** · {2 * BATCH} rows (2/2 batches, finished)" in texts(at.markdown)
    assert len(pool.ids(SCREEN)) == 2 * BATCH and len(pool.screens) == 1
    button(at, "Remove").click().run()
    assert not pool.ids() and not pool.screens
