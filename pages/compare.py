"""Compare: two checkpoints (e.g. base vs RL) on the same space group and sample count (the paper's Fig. 6),
or any runs already in the session, side by side."""
import pandas as pd
import streamlit as st

from app import scoring, state, widgets
from app.compare import (PAPER_NOTES, PAPER_ROWS, arm_labels, arm_summary, findings, model_facts, rates_table,
                         sizes_line, start_comparison)
from app.checkpoints import find_checkpoints
from app.flags import annotate
from app.generation import GenerateRequest
from app.plots import compare_plane_figure, ehull_histogram
from app.pool import Pool

widgets.page_header("Compare", "Sample two checkpoints with identical settings, score both, and compare "
                               "stability, validity, uniqueness, novelty and FoM side by side — or compare runs you "
                               "already made. Rates count every sample; medians use only rows the scorer can judge.")

SAMPLE, RUNS = "Sample two models now", "Runs from this session"
mode = st.segmented_control("What to compare", (SAMPLE, RUNS), default=SAMPLE, key=state.kept("cmp-mode"))
pool = state.pool()

if mode == RUNS:
    names = pool.run_names()
    chosen = st.multiselect("Runs", names, default=names[-2:], key=state.kept("cmp-runs"),
                            help="Each Generate click, uploaded file and screen is a run")
    chosen = [r for r in chosen if r in names]
    if len(chosen) < 2:
        st.info("Pick two or more runs (make them on Generate, or upload files on Score).")
        st.stop()
    whole = pool.scored_frame()
    frames_all = {name: whole[whole["run"] == name] for name in chosen}
    for name in chosen:
        st.caption(f"**{name}**: {pool.runs[name].describe()}")
    request_text, job_name = None, None
else:
    with st.form("compare-form"):
        c1, c2 = st.columns(2)
        ref_a = widgets.checkpoint_picker("cmp-a", "Model A", default="base", container=c1)
        ref_b = widgets.checkpoint_picker("cmp-b", "Model B", default=("rl-fom", "rl-ehull", *[r.name for r in find_checkpoints()][1:2]), container=c2)
        d1, d2, d3, d4 = st.columns([2.2, 1, 1, 1])
        spacegroup = widgets.spacegroup_picker("cmp-sg", default=225, container=d1)
        num = d2.number_input("Samples per model", value=100, step=10, key=state.kept("cmp-num"),
                              help="1 to 1000; the paper uses 1000 per model")
        temperature = d3.number_input("Temperature", value=1.0, step=0.1, key=state.kept("cmp-temp"), format="%.2f",
                                      help="must be positive; 1 samples the model's own distribution")
        seed = d4.number_input("Seed", 0, 2**31 - 1, 0, key=state.kept("cmp-seed"))
        st.caption(f"Scoring uses the Score page settings: {state.score_settings().describe()}.")
        run = st.form_submit_button("Run comparison", type="primary", icon=":material/compare:")

    if run:
        # the models as they are (no overlap redraws): the comparison is of what each model learned
        request = GenerateRequest(spacegroup, int(num), float(temperature), (), (), int(seed), reject_overlaps=False)
        loaded = [widgets.load_checkpoint(r) for r in (ref_a, ref_b)]
        if all(c is not None for c in loaded):
            settings, notes = scoring.effective(state.score_settings())
            arms = {label: Pool() for label in arm_labels(loaded[0].name, loaded[1].name)}
            job = widgets.launch("compare", lambda: start_comparison(arms, loaded, request, settings),
                                 notes, "compare")
            if job is not None:
                facts = {label: model_facts(c) for label, c in zip(arms, loaded)}
                state.put(state.COMPARE, {"arms": arms, "request": request, "facts": facts})
                st.rerun()

    result = state.get(state.COMPARE)
    if not result:
        st.info("Choose two checkpoints and press **Run comparison**. The paper compares its base model with the RL "
                "fine-tuned ones on 1000 samples each; 100 samples per model take a few minutes on a CPU.")
        frames_all = None
    else:
        frames_all = {label: arm.scored_frame() for label, arm in result["arms"].items()}
        st.caption(result["request"].describe())
        if result.get("facts"):
            st.caption("Model sizes: " + sizes_line(result["facts"]))
        widgets.job_progress(state.job("compare"), label="Comparison", key="cmp-work", rerun_on_progress_s=3.0)

if frames_all:
    summaries = {label: arm_summary(frame) for label, frame in frames_all.items()}
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Measured here** (rates: fractions of all samples of each; medians: judged rows)")
        st.table(rates_table(summaries))
        for line in findings(summaries):
            st.caption(line)
    # plots: judged rows only, the same rows the medians use
    judged = {label: f[f["scored"] & f["trusted"]] for label, f in ((k, annotate(v)) for k, v in frames_all.items())}
    with right:
        st.markdown("**Energy above hull** (fraction of each model's judged samples)")
        st.plotly_chart(ehull_histogram(judged), width="stretch", key="cmp-hist")
    st.markdown("**Band gap vs ε_elec** with each model's Pareto front (judged rows, metals excluded from the fronts)")
    st.plotly_chart(compare_plane_figure(judged), width="stretch", key="cmp-plane")

with st.expander("What the paper found (the paper's model and scorers, not measured here)", expanded=not frames_all):
    for note in PAPER_NOTES:
        st.markdown(note)
    st.table(pd.DataFrame(PAPER_ROWS, columns=["Paper figure", "Metric", "Paper: base", "Paper: RL"]).set_index("Paper figure"))
