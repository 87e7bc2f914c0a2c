"""The app's plain-Python helpers (no Streamlit runtime): Pareto fronts, the structure pool, background
jobs, filters, tables, token probabilities, checkpoint discovery, shortlist edits, request checks."""
from __future__ import annotations

import itertools
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from app.flags import annotate
from app import checkpoints, compare, detail, explore, finetune, generation, shortlisting, tables
from core import explain as learn
from core.scoring import pareto
from app.jobs import Job
from app.pool import GENERATED, UPLOADED, Pool, counts
from core.errors import InvalidInputError, MissingResourceError
from app_support import expected, fake_score_iter, make_checkpoint


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# ---------------------------------------------------------------------------------------------
# Pareto front (both objectives maximised)
# ---------------------------------------------------------------------------------------------
def brute_force_front(x, y) -> np.ndarray:
    out = np.zeros(len(x), bool)
    for i in range(len(x)):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        out[i] = not any(x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i])
                         for j in range(len(x)) if np.isfinite(x[j]) and np.isfinite(y[j]))
    return out


def test_pareto_mask_matches_the_definition_on_random_clouds_with_ties_and_nans():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 40))
        x = rng.integers(0, 6, n).astype(float)   # many ties
        y = rng.integers(0, 6, n).astype(float)
        x[rng.random(n) < 0.1] = np.nan
        assert np.array_equal(pareto.pareto_mask(x, y), brute_force_front(x, y)), trial


def test_pareto_points_are_sorted_by_gap_with_falling_eps():
    x = np.array([1.0, 3.0, 2.0, 0.5, 2.5])
    y = np.array([5.0, 1.0, 3.0, 4.0, 2.9])
    fx, fy, idx = pareto.pareto_points(x, y)
    assert list(idx) == [0, 2, 4, 1]        # (0.5, 4) is dominated by (1, 5)
    assert np.all(np.diff(fx) > 0) and np.all(np.diff(fy) < 0)


def test_iso_fom_curve_has_constant_product():
    gap, eps = pareto.iso_fom_curve(10.0, 0.5, 8.0)
    assert np.allclose(gap * eps, 10.0)
    assert gap[0] == pytest.approx(0.5) and gap[-1] == pytest.approx(8.0)
    with pytest.raises(ValueError):
        pareto.iso_fom_curve(0.0, 1.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Pool
# ---------------------------------------------------------------------------------------------
class FakeSample:
    def __init__(self, structure, g=225, logp=-10.0, error=None):
        self.structure, self.spacegroup, self.logp, self.error = structure, g, logp, error
        self.string = "225-a-Na-0-0-0-b-Cl-1/2-1/2-1/2-5.64-5.64-5.64-90-90-90"
        self.formula = structure.composition.reduced_formula if structure is not None else "Og"


def test_pool_ids_scores_and_frames():
    pool = Pool()
    ids = pool.add_samples([FakeSample(nacl()), FakeSample(None, error="impossible lattice")], source="base")
    up = pool.add_structures([cscl()], source="cscl.cif")
    assert ids == [0, 1] and up == [2]
    assert pool.unscored_ids() == [0, 2]            # the unbuildable sample is never scored
    for i, row in fake_score_iter([pool.structure(0), pool.structure(2)]):
        pool.record_score([0, 2][i], row)
    frame = pool.scored_frame()
    assert list(frame.index) == [0, 1, 2]
    assert frame.loc[0, "fom_ev"] == pytest.approx(expected(nacl())["fom_ev"])
    assert frame.loc[2, "source"] == "cscl.cif" and frame.loc[2, "kind"] == UPLOADED
    assert pd.isna(frame.loc[1, "fom_ev"]) and frame.loc[1, "build_error"] == "impossible lattice"
    assert list(frame["status"]) == ["scored", "not buildable: impossible lattice", "scored"]
    assert counts(frame) == {"total": 3, "buildable": 2, "scored": 2, "errors": 0}
    pool.clear(GENERATED)                            # a new generation replaces the old samples only
    assert pool.ids() == [2] and list(pool.scores) == [2]
    assert pool.add_samples([FakeSample(nacl())], "base") == [3]   # ids are never reused


def test_pool_records_scores_from_another_thread():
    pool = Pool()
    pool.add_structures([nacl()] * 50, source="x")
    threads = [threading.Thread(target=lambda k=k: [pool.record_score(i, {"fom_ev": float(k)}) for i in range(50)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pool.scored_frame(only_scored=True)) == 50


# ---------------------------------------------------------------------------------------------
# background jobs
# ---------------------------------------------------------------------------------------------
def test_job_collects_items_and_stops_between_items():
    cleaned = []

    def slow(should_stop, job):
        try:
            for k in range(100):
                time.sleep(0.01)
                yield k
        finally:
            cleaned.append(True)

    job = Job("count", slow, total=100).start()
    while job.done < 3:
        time.sleep(0.005)
    job.stop()
    assert job.wait(5)
    assert job.state == "stopped" and 3 <= job.done < 100
    assert job.items == list(range(job.done))
    assert cleaned == [True]                      # the generator's cleanup ran (PPO saves there)


def test_job_reports_errors_as_one_line():
    def broken(should_stop, job):
        yield 1
        raise MissingResourceError("model X not found at /nowhere. Put it there.")

    job = Job("broken", broken).start()
    job.wait(5)
    assert job.state == "failed" and job.items == [1]
    assert job.error == "model X not found at /nowhere. Put it there."


# ---------------------------------------------------------------------------------------------
# Explore filters and clicks
# ---------------------------------------------------------------------------------------------
def scored_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [0, 1, 2, 3, 4], "formula": ["A", "B", "C", "D", "E"], "scored": [True, True, True, True, False],
        "e_above_hull": [0.0, 0.3, np.nan, 0.05, 0.0], "fom_ev": [5.0, 12.0, 7.0, np.nan, 50.0],
        "band_gap_ev": [1, 4, 2, np.nan, 9], "eps_elec": [5, 3, 3.5, 2, 9],
        "struct_valid": [True, True, False, True, True], "comp_valid": [True, False, True, True, True],
        "unique": [True, True, True, False, True], "novel": [None] * 5})


def test_filters_by_ehull_validity_and_uniqueness():
    f = scored_frame()
    ids = lambda flt: list(explore.apply_filters(f, flt)["id"])
    assert ids(explore.Filters()) == [0, 3]             # unscored row 4 never shown; invalid rows 1, 2 flagged
    every = lambda **kw: explore.Filters(show_flagged=True, **kw)
    assert ids(every()) == [0, 1, 2, 3]
    assert ids(explore.Filters(ehull_max=0.01)) == [0] and ids(explore.Filters(ehull_max=1.0)) == [0, 3]  # limits
    assert ids(every(ehull_max=0.01)) == [0, 1, 2]         # shown flagged rows: their E_hull is not judged, not limited
    missing = f.assign(struct_valid=True, comp_valid=True)  # all judged: row 2 has no E_hull
    assert ids(explore.Filters(ehull_max=0.1)) == [0, 3] and list(explore.apply_filters(missing, explore.Filters(
        ehull_max=0.1))["id"]) == [0, 2, 3]                 # NaN E_hull kept by default
    assert list(explore.apply_filters(missing, explore.Filters(ehull_max=0.1, keep_missing_ehull=False))["id"]) == [0, 3]
    assert ids(every(valid_only=True)) == [0, 3]
    assert ids(every(unique_only=True)) == [0, 1, 2]
    assert not explore.has_novelty(f)


def test_ranking_and_plot_click_parsing():
    f = scored_frame()
    assert explore.ranked_ids(f) == [4, 1, 2, 0, 3]                     # FoM descending, NaN last
    assert explore.ranked_ids(annotate(f)) == [4, 0, 3, 1, 2]           # flagged (invalid) rows never first
    event = {"selection": {"points": [{"curve_number": 3, "customdata": [2.0, "C", 225, 7.0, np.nan]}]}}
    assert explore.clicked_id(event) == 2
    assert explore.clicked_id({"selection": {"points": [{"x": 1}]}}) is None   # an iso-line has no id
    assert explore.clicked_id({"selection": {"points": []}}) is None
    front = explore.pareto_table(f)
    assert list(front["id"]) == [4]                                     # (9, 9) dominates everything
    assert explore.choice_label(f.iloc[1]) == "#1 B · FoM 12.00 eV · E_hull 0.300 eV/atom"


# ---------------------------------------------------------------------------------------------
# tables, plots
# ---------------------------------------------------------------------------------------------
def test_every_physical_column_header_carries_a_unit():
    from core.scoring.pipeline import COLUMNS

    units = {"energy_ev": "(eV)", "energy_per_atom": "(eV/atom)", "e_form_per_atom": "(eV/atom)",
             "e_above_hull": "(eV/atom)", "band_gap_ev": "(eV)", "fom_ev": "(eV)", "logp": "(nats)"}
    for column, unit in units.items():
        assert tables.label(column).endswith(unit), column
    assert set(COLUMNS) <= set(tables.COLUMNS)       # every pipeline column has a header
    assert tables.format_value("e_above_hull", 0.03125) == "0.031 eV/atom"
    assert tables.format_value("fom_ev", float("nan")) == "–"
    assert tables.format_value("struct_valid", True) == "yes"


def test_every_column_a_user_sees_has_a_readable_header_and_energies_carry_units():
    from core.scoring.feasibility import CHECKS
    from core.scoring.uncertainty import UNCERTAIN_COLUMNS

    shown = (set(tables.SCORE_VIEW) | set(tables.SAMPLE_VIEW) | set(shortlisting.SHOWN) | set(UNCERTAIN_COLUMNS)
             | {f"feasible_{c}" for c in CHECKS} | {"feasibility_failed", "feasibility_notes"})
    for column in shown:
        header = tables.label(column)
        assert column in tables.COLUMNS and "_" not in header.replace("E_", "").replace("ε_", ""), (column, header)
        if column.endswith(("_ev", "_ev_std", "_ev_lcb", "_ev_mean")):
            assert header.endswith("(eV)"), (column, header)
        if column.startswith("e_above_hull") and not column.endswith("_n"):
            assert header.endswith("(eV/atom)"), (column, header)
        assert tables.COLUMNS[column].help or column in ("formula", "notes", "tags", "added_at"), column
    config = tables.column_config(["feasibility_failed", "feasible_stable"])
    assert config["feasibility_failed"]["label"] == "Checks failed"
    assert config["feasible_stable"]["type_config"]["type"] == "checkbox"


def test_ppo_curves_have_whole_steps_a_0_to_1_fraction_and_titles_clear_of_axis_titles():
    from app.plots import ppo_figure

    history = [{"step": k, "reward_mean": -0.1 * k, "kl": 0.01 * k, "e_hull_mean": 0.3, "valid_fraction": 1.0}
               for k in (1, 2, 3)]
    fig = ppo_figure(history)
    assert fig.layout.height == 460                                   # two rows of two panels
    axes = [fig.layout[a] for a in ("xaxis", "xaxis2", "xaxis3", "xaxis4")]
    assert all(a.tickmode == "linear" and a.dtick == 1 and a.tick0 == 1 for a in axes)   # steps 1, 2, 3
    assert [a.title.text for a in axes] == [None, None, "PPO step", "PPO step"]      # only under the bottom row
    assert tuple(fig.layout.yaxis4.range) == (0, 1)                   # buildable fraction
    assert [a.text for a in fig.layout.annotations][3] == "Buildable fraction"
    top_row_bottom = fig.layout.yaxis.domain[0]
    title_row2 = fig.layout.annotations[2].y                           # sits above the second row's plot
    assert title_row2 < top_row_bottom - 0.08                          # a gap for the tick labels above it
    many = ppo_figure([{"step": k, "reward_mean": 0.0, "kl": 0.0} for k in range(1, 41)])
    assert many.layout.xaxis.dtick == 5 and many.layout.height == 305  # ≤ 8 whole-number ticks, one row


def test_view_drops_empty_columns_and_keeps_order():
    f = pd.DataFrame({"formula": ["A"], "relax_steps": [None], "fom_ev": [1.0], "id": [0]})
    assert list(tables.view(f, ("id", "formula", "relax_steps", "fom_ev", "absent")).columns) == ["id", "formula", "fom_ev"]


def test_pareto_figure_places_points_front_and_iso_lines():
    from app.plots import compare_plane_figure, ehull_histogram, pareto_figure

    f = scored_frame()
    fig = pareto_figure(explore.apply_filters(f, explore.Filters(show_flagged=True)), selected_id=1)
    names = [t.name for t in fig.data]
    assert "Pareto front" in names and "selected" in names
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [1] and list(front.y) == [5]   # id 0; ids 1, 2 are invalid (flagged); id 3 has no gap
    points = next(t for t in fig.data if t.name == "structures")
    assert list(points.marker.symbol) == ["circle", "x"]              # a shown flagged row is a cross (ids 0, 1)
    iso = [t for t in fig.data if t.legendgroup == "iso"]
    assert len(iso) == 3
    for t, fom in zip(iso, (5.0, 10.0, 20.0)):
        assert t.x is None or len(t.x) == 0 or np.allclose(np.asarray(t.x) * np.asarray(t.y), fom)
    assert any(t.x is not None and len(t.x) for t in iso)
    assert "eV" in fig.layout.xaxis.title.text and "ε" in fig.layout.yaxis.title.text
    hist = ehull_histogram({"base": f, "rl": f})
    assert hist.layout.xaxis.title.text.endswith("(eV/atom)") and len(hist.data) == 2
    assert hist.layout.xaxis.ticktext[-1] == "≥ 0.4"                     # the last bin holds everything above
    assert {t.name for t in compare_plane_figure({"base": f, "rl": f}).data} >= {"base", "rl"}


# ---------------------------------------------------------------------------------------------
# structures: tokens, symmetry, cell facts
# ---------------------------------------------------------------------------------------------
def test_split_tokens_keeps_negative_numbers_and_groups_sites():
    toks = detail.split_tokens("225-a-Na-0-0-0-b-Cl-1/2-1/2-1/2--2.5-5.6-5.6-90-90-90")
    assert [k for k, _ in toks] == ["G"] + ["W", "A", "X", "X", "X"] * 2 + ["L"] * 6
    assert toks[11] == ("L", "-2.5") and toks[7] == ("A", "Cl")


def test_symmetry_table_and_cell_facts_of_rock_salt():
    facts, sites = detail.symmetry_table(nacl())
    assert facts["Space group"] == "225 Fm-3m" and facts["Crystal system"] == "cubic"
    assert sorted(sites["Wyckoff"]) == ["4a", "4b"] and set(sites["Element"]) == {"Na", "Cl"}
    cell = detail.lattice_facts(nacl())
    assert cell["a, b, c"] == "5.640, 5.640, 5.640 Å" and cell["Atoms in cell"] == "8"
    assert cell["Density"].endswith("g/cm³") and float(cell["Density"].split()[0]) == pytest.approx(2.163, abs=0.01)
    card = dict(detail.property_card({"e_above_hull": 0.0123, "fom_ev": float("nan"), "novel": True}))
    assert card == {"E_hull": "0.012 eV/atom", "Novel": "yes"}


@pytest.fixture(scope="module")
def tiny_ck(tmp_path_factory):
    from core.checkpoint import load_checkpoint

    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck")))


def test_token_probabilities_sum_to_the_models_log_likelihood(tiny_ck):
    from core.logp import batched_logp
    from core.sampler import sample
    from core.tokens import stack

    samples = sample(tiny_ck, 225, 3, seed=3)
    arrays = stack([s.tokens for s in samples], tiny_ck.config.n_max)
    reference = batched_logp(tiny_ck.config, tiny_ck.params, *(arrays[k] for k in ("G", "L", "XYZ", "A", "W"))).total
    for s, ref in zip(samples, reference):
        steps = learn.token_steps(tiny_ck, s.tokens)
        assert learn.total_logp(steps) == pytest.approx(float(ref), abs=1e-3)
        for step in steps:
            if step.discrete:                          # a probability, and the options are a distribution
                assert 0.0 < step.probability <= 1.0
                assert step.options["probability"].sum() <= 1.0 + 1e-5
                assert step.options["probability"].is_monotonic_decreasing
        wyckoff_steps = [st for st in steps if st.kind == "Wyckoff"]
        assert len(wyckoff_steps) == s.tokens.num_sites and steps[-1].kind == "lattice"


def test_wyckoff_table_of_fm3m_and_temperature_summary(tiny_ck):
    table = learn.wyckoff_frame(225)
    assert list(table["Wyckoff"][:4]) == ["4a", "4b", "8c", "24d"] and len(table) == 12
    assert table.iloc[-1]["Free parameters"] == "xyz"            # 192l is the general position
    assert table.set_index("Wyckoff").loc["32f", "Free parameters"] == "x"    # (x, x, x)
    assert table.set_index("Wyckoff").loc["48h", "Free parameters"] == "y"    # (0, y, y)
    summary = learn.temperature_summary({1.0: [FakeSample(nacl(), logp=-3), FakeSample(None, logp=-5)]})
    assert summary.loc[0, "buildable"] == 0.5 and summary.loc[0, "mean log p (nats)"] == -4


# ---------------------------------------------------------------------------------------------
# checkpoints, requests, shortlist edits, errors
# ---------------------------------------------------------------------------------------------
def test_checkpoint_discovery(tmp_path, monkeypatch):
    monkeypatch.setenv("CFRL_CHECKPOINTS_DIR", str(tmp_path / "ck"))
    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(tmp_path / "data"))
    make_checkpoint(tmp_path / "ck", "zzz")
    make_checkpoint(tmp_path / "ck", "base")
    (tmp_path / "ck" / "official").mkdir()
    (tmp_path / "ck" / "official" / "epoch_000100.pkl").write_bytes(pickle.dumps({"params": {}}))
    (tmp_path / "ck" / "empty").mkdir()
    (tmp_path / "ck" / "dielectric").mkdir()                          # a property model, not a generator
    (tmp_path / "ck" / "dielectric" / "model.pkl").write_bytes(b"x")
    (tmp_path / "ck" / "broken").mkdir()                              # params.npz without a config
    (tmp_path / "ck" / "broken" / "params.npz").write_bytes(b"x")
    make_checkpoint(checkpoints.finetuned_dir(), "mine")
    refs = checkpoints.find_checkpoints()
    assert [r.name for r in refs] == ["base", "official", "zzz", "mine"]
    assert refs[-1].label == "mine (fine-tuned)"
    typed = checkpoints.from_path(" /x/alex20/epoch_005500.pkl ", "cfg.json")
    assert (typed.name, typed.path, typed.config) == ("alex20/epoch_005500", "/x/alex20/epoch_005500.pkl", "cfg.json")


def test_generate_request_checks():
    generation.GenerateRequest(225, 10).check()
    for bad in (generation.GenerateRequest(num=0), generation.GenerateRequest(temperature=0.0),
                generation.GenerateRequest(elements=("Cs", "F"), exclude=("F",))):
        with pytest.raises(InvalidInputError):
            bad.check()
    assert "only Cs F" in generation.GenerateRequest(225, 5, elements=("Cs", "F")).describe()
    with pytest.raises(InvalidInputError):
        finetune.FineTuneRequest(steps=500).check()
    with pytest.raises(InvalidInputError):
        finetune.FineTuneRequest(name="../escape").check()


def test_shortlist_properties_and_edits():
    props = shortlisting.properties_of({"fom_ev": np.float64(3.5), "e_above_hull": float("nan"), "formula": "X",
                                        "novel": None, "unique": np.bool_(True)})
    assert props == {"fom_ev": 3.5, "unique": True} and type(props["fom_ev"]) is float
    listing = pd.DataFrame({"id": [1, 2], "formula": ["A", "B"], "notes": ["", "x"], "tags": [["a"], []],
                            "source": ["s", "s"]})
    before = shortlisting.editable_frame(listing)
    assert list(before["tags"]) == ["a", ""] and not before["select"].any()
    after = before.copy()
    after.loc[1, "notes"] = "nice"
    after.loc[0, "select"] = True
    assert shortlisting.edits(before, after) == [(2, "nice", "")]


def test_rates_table_formats_summaries():
    table = compare.rates_table({"base": {"n_structures": 10.0, "stable_judged": 0.447, "median_fom_ev": 3.14159,
                                          "novelty": float("nan")}})
    assert table.loc["Stable (judged, E_hull < 0.1 eV/atom)", "base"] == "44.7 %"
    assert table.loc["Median FoM ε·E_g (eV, judged rows)", "base"] == "3.14"
    assert table.loc["Novel", "base"] == "–" and table.loc["Samples", "base"] == "10"
    assert compare.arm_labels("base", "base") == ("base (A)", "base (B)")


def arm_frame(e_hull, fom, gap):
    n = len(e_hull)
    return pd.DataFrame({"id": range(n), "formula": ["X"] * n, "build_error": [None] * n, "scored": [True] * n,
                         "e_above_hull": e_hull, "energy_per_atom": [-3.0] * n, "fom_ev": fom, "band_gap_ev": gap,
                         "eps_elec": [4.0] * n, "struct_valid": [True] * n, "comp_valid": [True] * n,
                         "unique": [True] * n, "novel": [None] * n, "error": [None] * n})


def test_compare_uses_medians_of_judged_rows_and_rates_of_all_samples():
    # one absurd row (46.6 eV/atom above the hull, issue #18) must not move the summary
    summary = compare.arm_summary(arm_frame([0.02, 0.05, 46.6, 0.08], [12.0, 8.0, 100.0, 3.0], [3.0, 2.0, 25.0, 0.0]))
    assert summary["judged"] == 0.75 and summary["stable_judged"] == 0.75
    assert summary["median_e_above_hull"] == 0.05 and summary["median_fom_ev"] == 8.0
    assert summary["fom_over_10"] == 0.25          # the absurd row's FoM of 100 eV is not counted
    assert summary["mean_e_above_hull"] > 11       # what a mean would have said (the old table)
    other = compare.arm_summary(arm_frame([0.5, 0.6], [20.0, 30.0], [4.0, 5.0]))
    lines = compare.findings({"base": summary, "rl": other})
    assert "rl has a lower judged-stable fraction than base: 75.0 % → 0.0 %." in lines[0]
    assert any(line.startswith("Here, rl has a higher median FoM") for line in lines)
    assert not any("where a gain came from" in line for line in lines)     # both arms all unique and judged
    collapsed = arm_frame([0.02, 0.03, 9.0, 0.02], [40.0, 40.0, 1.0, 40.0], [2.0, 2.0, 1.0, 2.0])
    collapsed["unique"] = [True, False, True, False]                            # one rewarded formula, repeated
    lines = compare.findings({"base": summary, "rl": compare.arm_summary(collapsed)})
    assert any(line.startswith("Check where a gain came from: rl has fewer distinct structures than base: "
                               "100 % → 50 %.") for line in lines), lines


def test_model_facts_say_size_and_data():
    from types import SimpleNamespace

    ck = SimpleNamespace(meta={"param_count": 447143, "train_size": 5177, "val_size": 575, "ppo_steps": 100,
                               "reward": "fom"}, params={})
    facts = compare.model_facts(ck)
    assert facts == {"parameters": "0.45 M", "training crystals": "5,177 (+575 validation)", "crystals seen": "5,752",
                     "RL": "100 PPO steps, reward fom"}
    assert compare.sizes_line({"rl-fom": facts}) == ("**rl-fom**: 0.45 M parameters, trained on 5,177 (+575 validation) "
                                                     "crystals, 100 PPO steps, reward fom")


def test_error_text_levels():
    from app.widgets import error_text

    assert error_text(InvalidInputError("bad SG"))[0] == "warning"
    level, text = error_text(MissingResourceError("weights not found at /x. Do Y."), "cannot score")
    assert level == "error" and text == "Cannot score: missing — weights not found at /x. Do Y."
    assert error_text(ZeroDivisionError("boom"))[1] == "ZeroDivisionError: boom"


def test_warm_up_loads_the_default_scoring_models_once_in_the_background(monkeypatch):
    from app import scoring

    calls = []
    monkeypatch.setattr(scoring, "_WARM_UP", None)
    monkeypatch.setattr(scoring, "SCORER", None)
    monkeypatch.setattr(scoring, "preload", lambda settings: calls.append(("preload", threading.current_thread().name)))
    monkeypatch.setattr(scoring, "property_models_unavailable", lambda: calls.append(("properties", threading.current_thread().name)))
    monkeypatch.setattr(scoring, "resolve", lambda settings: calls.append(("resolve", settings.novelty)))
    monkeypatch.setenv("CFRL_APP_WARMUP", "0")
    assert scoring.warm_up() is None and calls == []                 # switched off
    monkeypatch.setenv("CFRL_APP_WARMUP", "1")
    thread = scoring.warm_up(scoring.ScoreSettings(novelty="training"))
    assert thread.name == "cfrl-warm-up" and thread.join(10) is None and not thread.is_alive()
    assert scoring.warm_up() is thread                                # once per process
    # imports in the calling (script) thread; loading in the background thread
    assert calls == [("preload", threading.current_thread().name), ("properties", "cfrl-warm-up"),
                     ("resolve", "training")]
    monkeypatch.setattr(scoring, "_WARM_UP", None)
    monkeypatch.setattr(scoring, "SCORER", fake_score_iter)
    assert scoring.warm_up() is None                                  # the fake scorer needs no models


def test_server_arguments_plug_in_the_stand_ins(monkeypatch):
    """``app/main.py --scorer SPEC --reward SPEC`` (how test and bench servers get fast fakes) sets them;
    no arguments change nothing."""
    from app import finetune, harness, scoring

    monkeypatch.setattr(scoring, "SCORER", None)
    monkeypatch.setattr(finetune, "REWARD_FACTORIES", dict(finetune.REWARD_FACTORIES))
    harness.use_stand_ins([])
    assert scoring.SCORER is None and finetune.REWARD_FACTORIES["fom"] is not harness.fake_reward
    support = Path(__file__).resolve().parent / "app_support.py"
    harness.use_stand_ins(["--scorer", f"{support}:fake_score_iter", "--reward", "app.harness:fake_reward"])
    assert scoring.SCORER.__name__ == "fake_score_iter"
    assert set(finetune.REWARD_FACTORIES.values()) == {harness.fake_reward}


def test_sampler_warm_up_runs_once_per_checkpoint_in_the_background(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(generation, "generate", lambda ck, request: calls.append((ck, request.num, request.spacegroup,
                                                                                  threading.current_thread().name)))
    from core import sampler

    monkeypatch.setattr(sampler, "precompile", lambda ck, num, reject_overlaps: calls.append(("precompile", num, reject_overlaps)))
    checkpoint = object()
    monkeypatch.setenv("CFRL_APP_WARMUP", "0")
    assert generation.warm_up(checkpoint) is None and calls == []
    monkeypatch.setenv("CFRL_APP_WARMUP", "1")
    thread = generation.warm_up(checkpoint)
    thread.join(10)
    assert generation.warm_up(checkpoint) is None                   # already warm
    assert calls == [("precompile", 100, True), (checkpoint, 100, 225, "cfrl-warm-up-sampler")]
