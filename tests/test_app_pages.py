"""Every page of the Streamlit app, driven by streamlit.testing (AppTest).

Each test starts the real entry point (``app/main.py`` with ``st.navigation``) against a temporary
checkpoints folder holding tiny untrained CrystalFormers and a temporary app data folder. Scoring uses
``app_support.fake_score_iter`` (exact closed-form numbers) except in the last test, which runs the real
pipeline on two structures when the scoring engine is installed.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app import finetune, scoring
from app.pool import Pool
from app_support import expected, fake_score_iter, make_checkpoint

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
TIMEOUT_S = 300
TITLES = {"generate": "Generate", "score": "Score", "explore": "Explore", "compare": "Compare",
          "shortlist": "Shortlist", "learn": "Learn", "finetune": "Fine-tune"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Tiny 'base' and 'rl-fom' checkpoints, an empty app data folder, the fake scorer."""
    ckdir = tmp_path / "checkpoints"
    make_checkpoint(ckdir, "base", seed=1)
    make_checkpoint(ckdir, "rl-fom", seed=2)
    monkeypatch.setenv("CFRL_CHECKPOINTS_DIR", str(ckdir))
    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(scoring, "SCORER", fake_score_iter)
    return tmp_path


def start(page: str | None = None, session: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT_S)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at, label: str):
    matches = [b for b in at.button if b.label.startswith(label)]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


def finish(at, job: str):
    """Wait for a background job, then rerun so the page shows its final state."""
    assert at.session_state["jobs"][job].wait(TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def scored_pool(structures) -> Pool:
    pool = Pool()
    ids = pool.add_structures(structures, source="test.cif")
    for k, row in fake_score_iter(structures):
        pool.record_score(ids[k], row)
    return pool


# ---------------------------------------------------------------------------------------------
def test_every_page_opens_with_its_title_and_explanation(env):
    at = start()
    assert "**parameters**" in texts(at.sidebar.markdown)           # the sidebar shows the loaded model
    for page, title in TITLES.items():
        at.switch_page(f"../pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.title[0].value == title
        assert at.caption and len(at.caption[0].value) > 40          # one-line explanation under the title


def test_generate_fills_the_pool_and_scores_arrive_with_exact_values(env):
    at = start()
    at.number_input(key="gen-num").set_value(6)
    button(at, "Generate").click().run()                                   # sampling runs in the background
    finish(at, "work")
    pool = at.session_state["pool"]
    assert len(pool.entries) == 6 and all(e.token_string.startswith("225-") for e in pool.entries.values())
    table = at.dataframe[0].value
    assert len(table) == 6 and set(table["spacegroup_label"]) == {"225 Fm-3m (cubic)"}
    assert "scoring 6/6" in texts(at.get("progress")) or "scoring" in at.session_state["jobs"]["work"].phase
    buildable = [e for e in pool.entries.values() if e.structure is not None]
    assert len(pool.scores) == len(buildable)
    for e in buildable:
        assert pool.scores[e.id]["fom_ev"] == pytest.approx(expected(e.structure)["fom_ev"])


def test_widget_changes_and_page_switches_keep_results_without_recomputing(env):
    at = start()
    at.number_input(key="gen-num").set_value(4)
    at.toggle(key="gen-autoscore").set_value(False)
    button(at, "Generate").click().run()
    finish(at, "work")
    pool = at.session_state["pool"]
    assert not pool.scores                                                 # scoring was switched off
    before = {i: e.token_string for i, e in pool.entries.items()}
    at.number_input(key="gen-temp").set_value(2.0).run()            # not submitted: nothing happens
    at.switch_page("../pages/learn.py").run()
    at.switch_page("../pages/generate.py").run()
    assert at.session_state["pool"] is pool
    assert {i: e.token_string for i, e in pool.entries.items()} == before
    assert len(at.dataframe[0].value) == 4


def test_settings_of_compare_score_learn_and_explore_survive_page_switches(env):
    at = start("compare", {"pool": scored_pool([nacl(), cscl()])})
    hexagonal = next(o for o in at.selectbox(key="cmp-sg").options if o.startswith("194 "))
    at.selectbox(key="cmp-sg").set_value(hexagonal)
    at.number_input(key="cmp-num").set_value(3)
    at.selectbox(key="cmp-b-choice").set_value("base")
    button(at, "Run comparison").click().run()                            # a form's values count once submitted
    finish(at, "compare")
    at.switch_page("../pages/score.py").run()
    at.toggle(key="score-relax").set_value(True).run()
    at.switch_page("../pages/learn.py").run()
    at.number_input(key="learn-seed").set_value(7)
    at.multiselect(key="learn-temps").set_value([2.0]).run()
    at.switch_page("../pages/explore.py").run()
    at.toggle(key="explore-valid").set_value(True)
    at.slider(key="explore-ehull").set_value(0.05)
    at.number_input(key="explore-cmax").set_value(0.2).run()
    for page in ("generate", "compare", "score", "learn", "explore"):   # every value above was dropped once
        at.switch_page(f"../pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
    assert (at.toggle(key="explore-valid").value, at.slider(key="explore-ehull").value,
            at.number_input(key="explore-cmax").value) == (True, 0.05, 0.2)
    at.switch_page("../pages/learn.py").run()
    assert (at.number_input(key="learn-seed").value, at.multiselect(key="learn-temps").value) == (7, [2.0])
    at.switch_page("../pages/score.py").run()
    assert at.toggle(key="score-relax").value is True
    at.switch_page("../pages/compare.py").run()
    assert (at.selectbox(key="cmp-sg").value, at.number_input(key="cmp-num").value) == (hexagonal, 3)
    assert at.selectbox(key="cmp-b-choice").value == "base"


def test_generate_restores_a_request_for_the_training_distribution(env):
    from app.generation import GenerateRequest

    pool = Pool()
    pool.generation = {"request": GenerateRequest("train", num=7)}
    at = start("generate", {"pool": pool})
    assert at.selectbox(key="gen-sg").value == "training distribution"
    assert at.number_input(key="gen-num").value == 7


def test_impossible_request_is_explained_and_previous_samples_are_kept(env):
    at = start()
    at.number_input(key="gen-num").set_value(3)
    at.toggle(key="gen-autoscore").set_value(False)
    button(at, "Generate").click().run()
    finish(at, "work")
    ids = list(at.session_state["pool"].entries)
    at.multiselect(key="gen-elements").set_value(["Cs", "F"])
    at.multiselect(key="gen-exclude").set_value(["F"])
    button(at, "Generate").click().run()
    assert "F both allowed and excluded" in texts(at.warning)
    assert list(at.session_state["pool"].entries) == ids


def test_missing_checkpoints_say_where_to_put_them(env, monkeypatch):
    empty = env / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("CFRL_CHECKPOINTS_DIR", str(empty))
    at = start()
    assert str(empty) in texts(at.sidebar.warning)
    button(at, "Generate").click().run()
    assert "No checkpoint selected" in texts(at.warning)
    at.text_input(key="sidebar-ckpt-path").input(str(env / "missing.pkl")).run()
    assert "not found" in texts(at.sidebar.error) and "huggingface.co/zdcao/CrystalFormer" in texts(at.sidebar.error)


def test_score_page_scores_uploads_with_an_error_row_for_an_unsupported_element(env):
    pool = Pool()
    og = Structure(Lattice.cubic(4.5), ["Og", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    pool.add_structures([nacl(), og, cscl()], source="mine.cif")
    at = start("score", {"pool": pool})
    button(at, "Score 3 structure").click().run()
    finish(at, "work")
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[1, "status"] == "error: energy: element Og not covered by fake"
    assert table.loc[0, "fom_ev"] == pytest.approx(expected(nacl())["fom_ev"])
    assert table.loc[2, "e_above_hull"] == pytest.approx(0.04)            # 2 atoms × 0.02 eV/atom
    assert "3 scored" in texts(at.caption)


def test_uploaded_files_are_read_and_bad_files_reported(env):
    from pymatgen.io.cif import CifWriter

    from app.uploads import ingest

    pool = Pool()
    good = ingest(pool, "nacl.cif", str(CifWriter(nacl())).encode())
    bad = ingest(pool, "junk.cif", b"this is not a crystal")
    assert good.added == 1 and not good.errors
    assert bad.added == 0 and bad.errors and not any("junk.cif" in e for e in bad.errors)   # the page names it once
    assert bad.errors == ["not a readable CIF: no data block with a cell and atom sites"]
    assert [e.formula for e in pool.entries.values()] == ["NaCl"]


def test_stop_ends_scoring_and_keeps_finished_rows(env, monkeypatch):
    def slow(structures, **kw):
        for i, row in fake_score_iter(structures, **{**kw, "batch_size": 1}):
            time.sleep(0.3)
            yield i, row

    monkeypatch.setattr(scoring, "SCORER", slow)
    pool = Pool()
    pool.add_structures([nacl()] * 30, source="many.cif")
    at = start("score", {"pool": pool})
    button(at, "Score 30").click().run()
    job = at.session_state["jobs"]["work"]
    while job.done < 2:
        time.sleep(0.05)
    at.button(key="score-work-stop").click().run()
    assert job.wait(30) and job.state == "stopped"
    done = len(pool.scores)
    assert 2 <= done < 30
    at.run()
    assert f"{done} scored" in texts(at.caption)
    assert button(at, f"Score {30 - done}").disabled is False               # the rest can still be scored


def test_explore_ranks_filters_opens_and_shortlists(env):
    structures = [nacl(), cscl(), nacl().make_supercell([1, 1, 2], in_place=False)]
    pool = scored_pool(structures)
    at = start("explore", {"pool": pool})
    assert at.get("plotly_chart")
    foms = {i: expected(s)["fom_ev"] for i, s in enumerate(structures)}
    best = max(foms, key=foms.get)
    pick = at.selectbox(key="explore-pick")
    assert pick.value == best and pick.options[0].startswith(f"#{best} ")
    other = min(foms, key=foms.get)
    pick.set_value(other).run()
    assert at.session_state["selected_id"] == other
    assert at.subheader[0].value.startswith(pool.entries[other].formula)
    at.text_input(key=f"short{other}-notes").input("promising")
    at.text_input(key=f"short{other}-tags").input("halide, cubic")
    button(at, "Add to shortlist").click().run()
    assert "to the shortlist as #1" in texts(at.success)
    button(at, "Add to shortlist").click().run()
    assert "already on the shortlist as #1" in texts(at.info)
    from core.shortlist import Shortlist

    listing = Shortlist().list()
    assert list(listing["notes"]) == ["promising"] and list(listing["tags"]) == [["halide", "cubic"]]
    assert listing.loc[0, "fom_ev"] == pytest.approx(foms[other])
    at.slider(key="explore-ehull").set_value(0.05).run()                 # only 2-atom cells pass (0.04 eV/atom)
    assert set(at.selectbox(key="explore-pick").options) == {o for o in pick.options if "E_hull 0.040" in o}


def test_compare_two_checkpoints_side_by_side(env):
    at = start("compare")
    at.number_input(key="cmp-num").set_value(4)
    button(at, "Run comparison").click().run()
    finish(at, "compare")
    rates = at.table[0].value
    assert list(rates.columns) == ["base", "rl-fom"]
    assert list(rates.loc["Samples"]) == ["4", "4"]
    for arm in ("base", "rl-fom"):
        assert rates.loc["Unique", arm].endswith("%")
    assert len(at.get("plotly_chart")) == 2


def test_shortlist_page_lists_edits_and_offers_exports(env):
    from core.shortlist import Shortlist

    store = Shortlist()
    store.add(nacl(), properties={"fom_ev": 4.2}, source="base", notes="first")
    store.add(cscl(), properties={"fom_ev": 2.0}, source="base", tags=["cubic"])
    at = start("shortlist")
    assert "2 entries" in texts(at.caption)
    editor = at.dataframe[0].value
    assert list(editor["formula"]) == ["NaCl", "CsCl"] and list(editor["notes"]) == ["first", ""]
    assert list(editor["tags"]) == ["", "cubic"] and not editor["select"].any()
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("CIF zip (all 2)") for label in labels) and any(label.startswith("CSV") for label in labels)
    at.selectbox(key="shortlist-pick").set_value(2).run()
    assert at.subheader[0].value.startswith("CsCl · shortlist #2")


def test_learn_page_writes_a_crystal_token_by_token(env):
    at = start("learn")
    assert len(at.dataframe[0].value) == 12                                # Fm-3m has Wyckoff a … l
    button(at, "Write one crystal").click().run()
    steps = at.session_state["learn"]["one"]["steps"]
    assert "log p =" in texts(at.caption)
    shown = at.dataframe[1].value
    assert len(shown) == len(steps) and shown["kind"].iloc[-1] == "lattice"
    at.slider(key="learn-step").set_value(1).run()
    assert len(at.dataframe[1].value) == 1                                 # the first Wyckoff letter only
    at.multiselect(key="learn-temps").set_value([0.5, 1.5])
    at.number_input(key="learn-per-t").set_value(4)
    button(at, "Sample").click().run()
    summary = at.dataframe[2].value
    assert list(summary["temperature"]) == [0.5, 1.5] and list(summary["samples"]) == [4, 4]


def test_finetune_runs_ppo_live_and_the_result_becomes_selectable(env, monkeypatch):
    def fake_reward(mlip, hull):
        return lambda structures: np.array([-0.01 * len(s) if s is not None else -5.0 for s in structures])

    monkeypatch.setitem(finetune.REWARD_FACTORIES, "ehull", fake_reward)
    at = start("finetune")
    at.number_input(key="ft-steps").set_value(2)
    at.number_input(key="ft-batch").set_value(2)
    at.text_input(key="ft-name").input("tiny-ppo")
    button(at, "Start fine-tuning").click().run()
    finish(at, "finetune")
    job = at.session_state["jobs"]["finetune"]
    assert job.error is None and [log["step"] for log in job.items] == [1, 2]
    assert all(np.isfinite(log["kl"]) for log in job.items)
    assert "Saved as **tiny-ppo**" in texts(at.success)
    assert "tiny-ppo (fine-tuned)" in at.sidebar.selectbox(key="sidebar-ckpt-choice").options


def test_real_pipeline_scores_two_structures(env, monkeypatch):
    monkeypatch.setattr(scoring, "SCORER", None)
    shipped_dielectric = Path(__file__).resolve().parent.parent / "checkpoints" / "dielectric"
    if shipped_dielectric.exists():                                       # the property model lives there
        (env / "checkpoints" / "dielectric").symlink_to(shipped_dielectric)
    pool = Pool()
    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    pool.add_structures([nacl(), mgo], source="real.cif")
    at = start("score", {"pool": pool, "score_settings": scoring.default_settings().with_(novelty="none")})
    button(at, "Score 2").click().run()
    finish(at, "work")
    assert at.session_state["jobs"]["work"].error is None, at.session_state["jobs"]["work"].error
    frame = pool.scored_frame()
    assert frame["error"].isna().all(), list(frame["error"])
    assert np.isfinite(frame["e_above_hull"].astype(float)).all()
    assert (frame["e_above_hull"].astype(float) < 0.1).all()              # rock-salt NaCl and MgO are stable
