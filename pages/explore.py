"""Explore: band gap vs ε_elec of the scored structures, Pareto front, and each structure in detail."""
import numpy as np
import streamlit as st

from app import detail, shortlisting, state, tables, widgets
from app.explore import Filters, apply_filters, choice_label, clicked_id, filter_counts, has_novelty, pareto_table, ranked_ids
from app.flags import annotate, flag_summary
from app.navigation import link
from app.plots import pareto_figure
from app.pool import counts, numeric

widgets.page_header("Explore", "Band gap vs electronic dielectric constant of the scored structures: points "
                               "on the Pareto front are the best trade-offs, dashed curves have constant FoM = ε·E_g. "
                               "Click a point to open the structure.")
pool = state.pool()
frame = annotate(pool.scored_frame())
widgets.job_progress(state.job(state.WORK), label="Progress", key="explore-work", rerun_on_progress_s=2.0)

if counts(frame)["scored"] == 0:
    st.info("No scored structures yet. Generate samples (scoring starts right away) or score them on the Score page.")
    c1, c2, _ = st.columns([1, 1, 4])
    with c1:
        link("generate", "Generate")
    with c2:
        link("score", "Score")
    st.stop()

n_flagged = int((frame["scored"] & ~frame["trusted"]).sum())
f1, f2 = st.columns([3, 2], vertical_alignment="center")   # six controls in one row truncate their labels
f3, f4, f5, f6 = st.columns(4)
limit = f1.slider("Hide E_hull above (eV/atom)", 0.0, 1.0, 1.0, 0.01, key=state.kept("explore-ehull"),
                  help="Structures whose energy above the hull is larger than this are hidden (1.00 hides those above "
                       "1 eV/atom). The paper counts < 0.1 eV/atom as stable.")
show_flagged = f2.toggle(f"Show flagged ({n_flagged})", value=False, key=state.kept("explore-flagged"),
                         help="Rows the scorer's reference cannot judge (unphysical, far below the hull, hull incomplete "
                              "for the system, invalid, failed) are hidden from the plot, the Pareto front and the best "
                              "pick by default. Shown, they are crosses and never stand on the front.")
keep_missing = f3.toggle("Rows without E_hull", value=True, key=state.kept("explore-missing"),
                         help="keep structures whose E_hull could not be computed (grey points)")
valid_only = f4.toggle("Valid only", value=False, key=state.kept("explore-valid"),
                       help="structure and composition valid")
unique_only = f5.toggle("Unique only", value=False, key=state.kept("explore-unique"))
novel_known = has_novelty(frame)
novel_only = f6.toggle("Novel only", value=False, key=state.kept("explore-novel"), disabled=not novel_known,
                       help="needs a novelty reference (Score page)" if not novel_known else "not in the training set")
chemistry = widgets.chemistry_filters(frame, pool, key="explore")
filters = Filters(limit, keep_missing, valid_only, unique_only, novel_only and novel_known, show_flagged, **chemistry)
shown = apply_filters(frame, filters)
tally = filter_counts(frame, shown)
hidden_note = (f" · **{tally.flagged} flagged** by the scorer {'shown as crosses' if show_flagged else 'hidden'} "
               f"({flag_summary(frame[frame['scored']])})" if tally.flagged else "")
st.caption(f"Showing {tally.shown} of {tally.scored} scored structures{hidden_note}.")
color_max = st.session_state.get("explore-cmax", 0.4)

ids = ranked_ids(shown)
if not ids:
    st.warning("No structure passes the filters; loosen them above"
               + (" or show the flagged rows." if tally.flagged and not show_flagged else "."))
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
    if placed == 0:
        no_eps = not np.isfinite(numeric(shown, "eps_elec")).any()
        st.info("The plot is empty because "
                + ("no shown structure has an ε_elec: it was scored without the property models (band gap and "
                   "ε_elec), e.g. because they are not installed or the Score page left them out. Score again with "
                   "them to place structures on this plane." if no_eps else
                   "no shown structure has a band gap: score with the property models to place them."),
                icon=":material/info:")
with right:
    st.markdown("**Pareto front** (best E_g–ε_elec trade-offs by FoM; flagged rows and metals, E_g = 0, excluded)")
    front = tables.view(pareto_table(shown), ("formula", "run", "band_gap_ev", "eps_elec", "fom_ev", "e_above_hull",
                                              "hull_coverage"))
    st.dataframe(front, hide_index=True, width="stretch", column_config=tables.column_config(front.columns),
                 height=min(320, 38 + 35 * max(1, len(front))))
    st.number_input("Colour scale top (eV/atom)", 0.05, 2.0, 0.4, 0.05, key=state.kept("explore-cmax"))

labels = {int(r["id"]): choice_label(r) for _, r in shown.iterrows()}
pick = st.selectbox("Structure", ids, format_func=labels.get, key="explore-pick",
                    help="Click a point in the plot, or choose here (judged rows first, then by FoM)")

entry = pool.entries[pick]
row = frame.loc[pick].to_dict()
st.divider()
detail.structure_panel(entry.structure, row, title=f"{entry.formula} · #{pick} · {entry.run or entry.source}",
                       key=f"x{pick}", token_string=entry.token_string)
shortlisting.add_form(entry, row, key=f"short{pick}")
