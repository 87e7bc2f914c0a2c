"""Score: energies, E_hull, band gap, ε_elec and FoM of the generated and uploaded structures, live."""
import streamlit as st

from app import state, tables, uploads, widgets
from app.explore import Filters, chemistry_mask
from app.flags import annotate
from app.navigation import link
from app.pool import counts

widgets.page_header("Score", "Judge each structure with an interatomic potential (energy, E_hull against a "
                             "reference hull) and property models (band gap, ε_elec, FoM = ε·E_g). Rows fill in as "
                             "they finish; you can stop at any time and keep what is done.")
pool = state.pool()
settings = widgets.score_settings_form("score")

with st.expander("Add your own structures (CIF, POSCAR, extxyz, pymatgen JSON)", expanded=False):
    files = st.file_uploader("Structure files", accept_multiple_files=True, key="score-upload",
                             help="Each file may hold several structures; they are scored alongside the samples. "
                                  "Removing a file here removes its structures.")
    known = state.get("upload-known") or {}
    reports = state.get("upload-reports")
    reports = reports if isinstance(reports, dict) else {}
    uploads.sync_uploads(pool, files, known, reports)
    state.put("upload-known", known)
    state.put("upload-reports", reports)
    for run, r in list(reports.items()):
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        added = f"{r.added} structure(s) added" if r.added else "nothing added"
        problems = "".join(f"\n- {e}" for e in r.errors)
        box = c1.warning if r.errors else c1.success
        box(f"**{r.name}**: {added}" + (f"; {len(r.errors)} problem(s):{problems}" if r.errors else ""),
            icon=":material/warning:" if r.errors else ":material/check_circle:")
        if c2.button("Remove", key=f"upload-remove-{run}", icon=":material/delete:",
                     help="remove this file's structures and scores"):
            uploads.remove_upload(pool, run, known, reports)
            st.rerun()

frame = pool.scored_frame()
n = counts(frame)
job = state.job(state.WORK)
todo = pool.unscored_ids()
c1, c2, c3 = st.columns([1.4, 1.2, 3])
start = c1.button(f"Score {len(todo)} structure(s)", type="primary", disabled=not todo or bool(job and job.running),
                  icon=":material/play_arrow:", key="score-start")
rescore = c2.button("Re-score all", disabled=not n["buildable"] or bool(job and job.running), key="score-again",
                    help="Forget the scores and score every structure again with these settings")
c3.caption(f"{n['total']} structures · {n['buildable']} buildable · {n['scored']} scored · {n['errors']} with errors · "
           f"settings: {settings.describe()}")
if rescore:
    pool.scores.clear()
    todo = pool.unscored_ids()
if start or rescore:
    if widgets.start_scoring([(pool, todo)], settings):
        st.rerun()

widgets.job_progress(job, label="Progress", key="score-work", rerun_on_progress_s=3.0)

if n["total"] == 0:
    st.info("Nothing to score yet: generate samples first, or upload structure files above.")
    link("generate", "Go to Generate")
else:
    everything = annotate(pool.scored_frame())
    chemistry = widgets.chemistry_filters(everything, pool, key="score")
    listed = everything[chemistry_mask(everything, Filters(**chemistry))]
    if len(listed) < len(everything):
        st.caption(f"{len(listed)} of {len(everything)} structures match the filters.")
    view = tables.view(listed, tables.SCORE_VIEW)
    st.dataframe(view, hide_index=True, width="stretch", column_config=tables.column_config(view.columns),
                 height=min(640, 38 + 35 * len(view)), key="score-table")
    scored = listed[listed["scored"]]
    if len(scored):
        st.download_button("Download scores (CSV)", scored.drop(columns=["kind", "elements", "trusted"]).to_csv(index=False).encode(),
                           file_name="scores.csv", mime="text/csv", key="score-csv", on_click="ignore")
        link("explore", "Explore the scored structures →")
