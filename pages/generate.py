"""Generate: sample crystals from a CrystalFormer checkpoint in a chosen space group."""
import streamlit as st

from app import scoring, state, tables, uploads, widgets
from app.generation import GenerateRequest, sample_summary, start_generation, with_spacegroup_labels
from app.navigation import link
from app.pool import GENERATED

widgets.page_header("Generate", "Sample crystals from the model in the sidebar: pick a space group, how many, "
                                "the sampling temperature and which elements may appear.")
ref = state.checkpoint_ref()
pool = state.pool()

# the form starts from the last generated request, so a page switch (which drops widget values) loses no setting
last = pool.generation.get("request") or GenerateRequest()
with st.form("generate-form", border=True):
    c1, c2, c3, c4 = st.columns([2.2, 1, 1, 1])
    spacegroup = widgets.spacegroup_picker("gen-sg", default=last.spacegroup, container=c1)
    num = c2.number_input("Samples", 1, 1000, int(last.num), step=10, key="gen-num")
    temperature = c3.number_input("Temperature", 0.1, 3.0, float(last.temperature), step=0.1, key="gen-temp",
                                  format="%.2f", help="1 samples the model's own distribution; lower is more conservative")
    seed = c4.number_input("Seed", 0, 2**31 - 1, int(last.seed), key="gen-seed", help="same seed, same crystals")
    e1, e2, e3 = st.columns([2, 2, 1.2])
    elements = e1.multiselect("Only these elements (optional)", widgets.element_symbols(), default=list(last.elements),
                              key="gen-elements", placeholder="any element")
    exclude = e2.multiselect("Never these elements", widgets.element_symbols(), default=list(last.exclude),
                             key="gen-exclude", placeholder="none excluded")
    auto_score = e3.toggle("Score right away", value=True, key="gen-autoscore",
                           help="Start static scoring (Score page settings) as soon as the samples exist")
    submitted = st.form_submit_button("Generate", type="primary", icon=":material/auto_awesome:")

if submitted:
    request = GenerateRequest(spacegroup, int(num), float(temperature), tuple(elements), tuple(exclude), int(seed))
    checkpoint = widgets.load_checkpoint(ref)
    if checkpoint is not None:
        settings, notes = None, []
        if auto_score:
            settings, notes = scoring.effective(state.score_settings())
        if widgets.launch(state.WORK, lambda: start_generation(pool, checkpoint, request, settings), notes, "generate"):
            st.rerun()

work = state.job(state.WORK)
widgets.job_progress(work, label="Progress", key="gen-work", rerun_on_progress_s=1.5)
frame = pool.entries_frame()
generated = frame[frame["kind"] == GENERATED]
if generated.empty:
    if not (work and work.running):
        st.info("No samples yet: choose settings and press **Generate**.")
else:
    info = pool.generation
    if info:
        st.caption(f"{info['request'].describe()} · model {info['checkpoint']} · {info['seconds']:.1f} s")
    cols = st.columns(4)
    for col, (name, value) in zip(cols, sample_summary(generated).items()):
        col.metric(name, value)
    view = tables.view(with_spacegroup_labels(generated), tables.SAMPLE_VIEW)
    st.dataframe(view, hide_index=True, width="stretch", column_config=tables.column_config(view.columns),
                 height=min(600, 38 + 35 * len(view)))
    c1, c2, _ = st.columns([1, 1, 4])
    with c1:
        link("score", "Score these →")
    with c2:
        link("explore", "Explore →")

with st.expander("Open large-screen results", expanded=bool(pool.screens), icon=":material/folder_open:"):
    st.caption("A screen run with `python -m core screen --out FOLDER` (finished or still running) opens here; its "
               "scored rows join this session's structures on Explore and Shortlist.")
    with st.form("screen-form", border=False):
        s1, s2, s3 = st.columns([4, 1.3, 1], vertical_alignment="bottom")
        folder = s1.text_input("Screen folder", key="screen-folder", placeholder="e.g. screens/sg225")
        max_rows = s2.number_input("At most rows", 1, uploads.MAX_SCREEN_ROWS, uploads.DEFAULT_SCREEN_ROWS, step=500,
                                   key="screen-max", help="a bigger screen keeps its Pareto front, then the best FoM")
        opened = s3.form_submit_button("Open screen", icon=":material/folder_open:", width="stretch")
    if opened:
        with st.spinner("Reading the screen…"):
            report = uploads.open_screen(pool, folder, int(max_rows))
        if report.error:
            st.warning(report.error, icon=":material/warning:")
    for key, info in list(pool.screens.items()):
        report = info["report"]
        c1, c2, c3 = st.columns([6, 1, 1], vertical_alignment="center")
        c1.markdown(f"**{info['source']}** · {report.describe()}  \n:gray[{info['folder']}]")
        if c2.button("Reload", key=f"screen-reload-{key}", icon=":material/refresh:",
                     help="read the folder again (a running screen has new batches)"):
            with st.spinner("Reading the screen…"):
                uploads.open_screen(pool, info["folder"], info["max_rows"])
            st.rerun()
        if c3.button("Remove", key=f"screen-remove-{key}", icon=":material/close:"):
            uploads.close_screen(pool, key)
            st.rerun()
    if pool.screens:
        link("explore", "Explore the screen →")
