"""Compare: two checkpoints (e.g. base vs RL) on the same space group and sample count (the paper's Fig. 6)."""
import streamlit as st

from app import scoring, state, widgets
from app.compare import PAPER_NOTES, arm_labels, arm_summary, rates_table, start_comparison
from app.generation import GenerateRequest
from app.checkpoints import find_checkpoints
from app.plots import compare_plane_figure, ehull_histogram
from app.pool import Pool

widgets.page_header("Compare", "Sample two checkpoints with identical settings, score both, and compare "
                               "stability, validity, uniqueness, novelty and FoM side by side.")

with st.form("compare-form"):
    c1, c2 = st.columns(2)
    ref_a = widgets.checkpoint_picker("cmp-a", "Model A", default="base", container=c1)
    ref_b = widgets.checkpoint_picker("cmp-b", "Model B", default=("rl-fom", "rl-ehull", *[r.name for r in find_checkpoints()][1:2]), container=c2)
    d1, d2, d3, d4 = st.columns([2.2, 1, 1, 1])
    spacegroup = widgets.spacegroup_picker("cmp-sg", default=225, container=d1)
    num = d2.number_input("Samples per model", 2, 1000, 100, step=10, key=state.kept("cmp-num"))
    temperature = d3.number_input("Temperature", 0.1, 3.0, 1.0, step=0.1, key=state.kept("cmp-temp"), format="%.2f")
    seed = d4.number_input("Seed", 0, 2**31 - 1, 0, key=state.kept("cmp-seed"))
    st.caption(f"Scoring uses the Score page settings: {state.score_settings().describe()}.")
    run = st.form_submit_button("Run comparison", type="primary", icon=":material/compare:")

if run:
    request = GenerateRequest(spacegroup, int(num), float(temperature), (), (), int(seed))
    loaded = [widgets.load_checkpoint(r) for r in (ref_a, ref_b)]
    if all(c is not None for c in loaded):
        settings, notes = scoring.effective(state.score_settings())
        arms = {label: Pool() for label in arm_labels(loaded[0].name, loaded[1].name)}
        job = widgets.launch("compare", lambda: start_comparison(arms, loaded, request, settings),
                             notes, "compare")
        if job is not None:
            state.put(state.COMPARE, {"arms": arms, "request": request})
            st.rerun()

result = state.get(state.COMPARE)
if not result:
    st.info("Choose two checkpoints and press **Run comparison**. The paper compares its base model with the RL "
            "fine-tuned ones on 1000 samples each; 100 samples per model take a few minutes on a CPU.")
else:
    arms = result["arms"]
    st.caption(result["request"].describe())
    widgets.job_progress(state.job("compare"), label="Comparison", key="cmp-work", rerun_on_progress_s=3.0)
    summaries = {label: arm_summary(pool) for label, pool in arms.items()}
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Rates** (fractions of all samples of each model)")
        st.table(rates_table(summaries))
    frames = {label: pool.scored_frame(only_scored=True) for label, pool in arms.items()}
    with right:
        st.markdown("**Energy above hull** (fraction of each model's scored samples)")
        st.plotly_chart(ehull_histogram(frames), width="stretch", key="cmp-hist")
    st.markdown("**Band gap vs ε_elec** with each model's Pareto front")
    st.plotly_chart(compare_plane_figure(frames), width="stretch", key="cmp-plane")
with st.expander("What the paper found", expanded=not result):
    for note in PAPER_NOTES:
        st.markdown(f"- {note}")
