"""Explore: band gap vs ε_elec of the scored structures, Pareto front, and each structure in detail."""
import streamlit as st

from app import detail, shortlisting, state, tables, widgets
from app.explore import Filters, apply_filters, choice_label, clicked_id, has_novelty, pareto_table, ranked_ids
from app.navigation import link
from app.plots import pareto_figure
from app.pool import counts

widgets.page_header("Explore", "Band gap vs electronic dielectric constant of the scored structures: points "
                               "on the Pareto front are the best trade-offs, dashed curves have constant FoM = ε·E_g. "
                               "Click a point to open the structure.")
pool = state.pool()
frame = pool.scored_frame()
widgets.job_progress(state.job(state.WORK), label="Progress", key="explore-work", rerun_on_progress_s=2.0)

if counts(frame)["scored"] == 0:
    st.info("No scored structures yet. Generate samples (scoring starts right away) or score them on the Score page.")
    c1, c2, _ = st.columns([1, 1, 4])
    with c1:
        link("generate", "Generate")
    with c2:
        link("score", "Score")
    st.stop()

f1, f2, f3, f4, f5 = st.columns([1.9, 1.5, 1.1, 1.1, 1.1])
limit = f1.slider("Show E_hull ≤ (eV/atom)", 0.0, 1.0, 1.0, 0.01, key=state.kept("explore-ehull"),
                  help="1.0 shows everything; the paper counts < 0.1 eV/atom as stable")
keep_missing = f2.toggle("Rows without E_hull", value=True, key=state.kept("explore-missing"),
                         help="keep structures whose E_hull could not be computed (grey points)")
valid_only = f3.toggle("Valid only", value=False, key=state.kept("explore-valid"),
                       help="structure and composition valid")
unique_only = f4.toggle("Unique only", value=False, key=state.kept("explore-unique"))
novel_known = has_novelty(frame)
novel_only = f5.toggle("Novel only", value=False, key=state.kept("explore-novel"), disabled=not novel_known,
                       help="needs a novelty reference (Score page)" if not novel_known else "not in the training set")
filters = Filters(None if limit >= 1.0 else limit, keep_missing, valid_only, unique_only, novel_only and novel_known)
shown = apply_filters(frame, filters)
color_max = st.session_state.get("explore-cmax", 0.4)

ids = ranked_ids(shown)
if not ids:
    st.warning("No structure passes the filters; loosen them above.")
    st.stop()
# the selected structure, decided before drawing: a new plot click wins, else the picker, else the best FoM
clicked = clicked_id(st.session_state.get("pareto"))
selected = state.get(state.SELECTED)
if clicked is not None and clicked != state.get("explore-last-click") and clicked in ids:
    state.put("explore-last-click", clicked)
    selected = clicked
elif st.session_state.get("explore-pick") in ids:
    selected = st.session_state["explore-pick"]
if selected not in ids:
    selected = ids[0]
state.put(state.SELECTED, selected)
st.session_state["explore-pick"] = selected

left, right = st.columns([3, 2])
with left:
    fig = pareto_figure(shown, ehull_max=color_max, selected_id=selected)
    fig.update_layout(uirevision="pareto")  # keep zoom while rows arrive
    st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="pareto")
    placed = sum(len(t.x) for t in fig.data if t.name in ("structures", "no E<sub>hull</sub>"))
    st.caption(f"{placed} of {len(shown)} shown structures have both E_g and ε_elec "
               f"({len(frame)} in the session). Colour scale: E_hull 0 to {color_max:g} eV/atom.")
with right:
    st.markdown("**Pareto front** (best E_g–ε_elec trade-offs, by FoM)")
    front = tables.view(pareto_table(shown), ("formula", "band_gap_ev", "eps_elec", "fom_ev"))
    st.dataframe(front, hide_index=True, width="stretch", column_config=tables.column_config(front.columns),
                 height=min(320, 38 + 35 * len(front)))
    st.number_input("Colour scale top (eV/atom)", 0.05, 2.0, 0.4, 0.05, key=state.kept("explore-cmax"))

labels = {int(r["id"]): choice_label(r) for _, r in shown.iterrows()}
pick = st.selectbox("Structure", ids, format_func=labels.get, key="explore-pick",
                    help="Click a point in the plot, or choose here (sorted by FoM)")

entry = pool.entries[pick]
row = frame.loc[pick].to_dict()
st.divider()
detail.structure_panel(entry.structure, row, title=f"{entry.formula} · #{pick} · {entry.source}", key=f"x{pick}",
                       token_string=entry.token_string)
shortlisting.add_form(entry, row, key=f"short{pick}")
