"""Generate: sample crystals from a CrystalFormer checkpoint in a chosen space group."""
import streamlit as st

from app import scoring, state, tables, uploads, widgets
from app.generation import GenerateRequest, acceptance_note, sample_summary, start_generation, with_spacegroup_labels
from app.navigation import link
from app.pool import GENERATED
from core.errors import InvalidInputError

widgets.page_header("Generate", "Sample crystals from the model in the sidebar: pick a space group, how many, "
                                "the sampling temperature and which elements may appear.")
ref = state.checkpoint_ref()
pool = state.pool()

# the form starts from the last generated request, so a page switch (which drops widget values) loses no setting
last = pool.generation.get("request") or GenerateRequest()
with st.form("generate-form", border=True):
    c1, c2, c3, c4 = st.columns([2.2, 1, 1, 1])
    spacegroup = widgets.spacegroup_picker("gen-sg", default=last.spacegroup, container=c1)
    num = c2.number_input("Samples", value=int(last.num), step=10, key="gen-num",
                          help="1 to 1000 per run (the paper uses 1000)")
    temperature = c3.number_input("Temperature", value=float(last.temperature), step=0.1, key="gen-temp",
                                  format="%.2f", help="must be positive: 1 samples the model's own distribution; "
                                                      "lower is more conservative")
    seed = c4.number_input("Seed", 0, 2**31 - 1, int(last.seed), key="gen-seed", help="same seed, same crystals")
    e1, e2, e3 = st.columns([2, 2, 1.2])
    elements = e1.multiselect("Only these elements (optional)", widgets.element_symbols(), default=list(last.elements),
                              key="gen-elements", placeholder="any element")
    exclude = e2.multiselect("Never these elements", widgets.element_symbols(), default=list(last.exclude),
                             key="gen-exclude", placeholder="none excluded")
    auto_score = e3.toggle("Score right away", value=True, key="gen-autoscore",
                           help="Start static scoring (Score page settings) as soon as the samples exist")
    reject = e3.toggle("Redraw overlaps", value=bool(last.reject_overlaps), key="gen-overlaps",
                       help="Draw a crystal again (its lattice, then the whole crystal) while two atoms are closer "
                            "than 0.7 × the sum of their covalent radii; log p stays the model's own. Off: the "
                            "model's raw samples, about half of which overlap for the shipped base model")
    submitted = st.form_submit_button("Generate", type="primary", icon=":material/auto_awesome:")

if submitted:
    request = GenerateRequest(spacegroup, int(num), float(temperature), tuple(elements), tuple(exclude), int(seed),
                              bool(reject))
    try:
        request.check()          # out-of-range counts or temperatures are said here, before any model loads
    except InvalidInputError as exc:
        widgets.show_error(exc, "cannot generate")
    else:
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
        st.info("No samples yet: choose settings and press **Generate**. Each click makes a new run; earlier runs "
                "are kept side by side until you remove them.")
else:
    runs = [r for r in pool.run_names() if pool.runs[r].kind == GENERATED]
    latest = pool.generation.get("run")
    if latest in runs and state.get("gen-run-latest") != latest:   # a new run is shown first
        state.put("gen-run-latest", latest)
        st.session_state["gen-run"] = latest
    if st.session_state.get("gen-run") not in runs:
        st.session_state["gen-run"] = runs[-1]
    shown_run = st.selectbox("Run", runs[::-1], key="gen-run",
                             help="every Generate click is a run; all of them are on Score and Explore")
    info = pool.runs[shown_run]
    rows = generated[generated["run"] == shown_run]
    seconds = pool.generation.get("seconds") if pool.generation.get("run") == shown_run else None
    st.caption(f"{info.describe()}" + (f" · {seconds:.1f} s" if seconds is not None else "")
               + f" · {len(runs)} generated run(s) in this session")
    cols = st.columns(4)
    for col, (name, value) in zip(cols, sample_summary(rows).items()):
        col.metric(name, value)
    note = acceptance_note(pool.generation.get("acceptance")) if pool.generation.get("run") == shown_run else None
    if note:
        st.caption(note)
    view = tables.view(with_spacegroup_labels(rows), tables.SAMPLE_VIEW)
    st.dataframe(view, hide_index=True, width="stretch", column_config=tables.column_config(view.columns),
                 height=min(600, 38 + 35 * len(view)))
    c1, c2, c3, _ = st.columns([1, 1, 1.3, 3])
    with c1:
        link("score", "Score these →")
    with c2:
        link("explore", "Explore →")
    if c3.button("Remove this run", key="gen-remove", icon=":material/delete:", disabled=bool(work and work.running),
                 help="forget this run's samples and their scores (other runs stay)"):
        pool.remove_run(shown_run)
        st.rerun()

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
