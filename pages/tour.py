"""Start here: a ten-minute guided path through tokens, sampling, scoring, the Pareto front and what RL changes."""
import streamlit as st

from app import detail, scoring, state, tables, widgets
from app.checkpoints import find_checkpoints
from app.compare import arm_summary, findings, rates_table
from app.explore import Filters, apply_filters, pareto_table
from app.flags import annotate, flag_summary
from app.generation import start_generation
from app.navigation import link
from app.plots import compare_plane_figure, pareto_figure
from app.tour import STEPS, TOUR_REQUEST, tokens_example, tour_models

widgets.page_header("Start here", "A ten-minute path for a class: how CrystalFormer writes a crystal as tokens, "
                                  "samples crystals, how they are judged, which are the best trade-offs, and what "
                                  "reinforcement learning changes. Each step has a one-click preset on the shipped "
                                  "models.")
pool = state.pool()
tour = state.get("tour") or {}
state.put("tour", tour)
models = tour_models(find_checkpoints())
work = state.job(state.WORK)
busy = bool(work and work.running)


def sample(ref, slot: str) -> None:
    """Preset: TOUR_REQUEST with ``ref`` into a new run of the session (scored right away)."""
    checkpoint = widgets.load_checkpoint(ref)
    if checkpoint is None:
        return
    settings, notes = scoring.effective(state.score_settings())

    def start():
        job = start_generation(pool, checkpoint, TOUR_REQUEST, settings)
        return job

    before = set(pool.runs)
    if widgets.launch(state.WORK, start, notes, "sample"):
        tour[slot] = {"model": checkpoint.name, "before": before}
        st.rerun()


def run_of(slot: str) -> str | None:
    """The run a preset made (the first run that appeared after its click)."""
    info = tour.get(slot)
    if not info:
        return None
    new = [r for r in pool.runs if r not in info["before"] and pool.runs[r].model == info["model"]]
    return new[0] if new else None


def frame_of(run: str | None):
    whole = annotate(pool.scored_frame())
    return whole[whole["run"] == run] if run else whole.iloc[:0]


problem = models.missing()
if problem:
    st.warning(problem, icon=":material/warning:")
widgets.job_progress(work, label="Progress", key="tour-work", rerun_on_progress_s=2.0)
titles = [f"{k + 1} · {title} ({minutes} min)" for k, (title, minutes) in enumerate(STEPS)]

# ---- 1. tokens ------------------------------------------------------------------------------------
st.header(titles[0], divider="gray")
what, tokens = tokens_example()
st.markdown(f"CrystalFormer writes a crystal as a sequence of tokens. Here is {what}: the space group first, then "
            "for each symmetry-distinct site its **Wyckoff letter**, **element** and fractional **coordinates**, and "
            "finally the **lattice** (a, b, c in Å; α, β, γ in degrees). Two sites describe all 8 atoms of the cell, "
            "because the space group's symmetry copies each site.")
st.markdown(detail.tokens_html(tokens), unsafe_allow_html=True)
link("learn", "Watch the model write one, token by token, in 3D (Learn) →")

# ---- 2. sampling ----------------------------------------------------------------------------------
st.header(titles[1], divider="gray")
st.markdown(f"Preset: **{TOUR_REQUEST.describe()}** with the shipped `base` model "
            "(0.45 M parameters, trained on about 5,000 crystals: small, so expect many odd samples).")
base_run = run_of("base")
if st.button("Sample with base", type="primary", key="tour-base", disabled=busy or models.base is None,
             icon=":material/auto_awesome:"):
    sample(models.base, "base")
base_rows = frame_of(base_run)
if base_run and len(base_rows):
    st.caption(f"Run **{base_run}**: {len(base_rows)} samples, "
               f"{int(base_rows['build_error'].isna().sum())} buildable into a structure.")
    view = tables.view(base_rows, ("id", "formula", "nsites", "logp", "token_string"))
    st.dataframe(view.head(10), hide_index=True, width="stretch", column_config=tables.column_config(view.columns))

# ---- 3. scoring -----------------------------------------------------------------------------------
st.header(titles[2], divider="gray")
st.markdown("Each structure is judged by models trained on quantum-mechanical data: an interatomic potential gives "
            "its **energy above the convex hull** E_hull (eV/atom; < 0.1 counts as stable), property models its "
            "**band gap** E_g (eV) and **electronic dielectric constant** ε_elec, and FoM = ε_elec·E_g (eV). "
            "A number means something only against its reference: where the hull lacks competing phases, or a "
            "structure is unphysical, the row is **flagged** and kept out of plots and best picks by default.")
scored = base_rows[base_rows["scored"]] if len(base_rows) else base_rows
if len(scored):
    judged = int(scored["trusted"].sum())
    st.markdown(f"Of **{len(scored)}** scored samples, **{judged}** can be judged; "
                f"{len(scored) - judged} are flagged" + (f" ({flag_summary(scored)})" if judged < len(scored) else "")
                + ".")
elif base_run:
    st.caption("Scores arrive while you read…")
else:
    st.caption("Sample with base (step 2) first.")

# ---- 4. Pareto -----------------------------------------------------------------------------------
st.header(titles[3], divider="gray")
st.markdown("A good dielectric needs both a wide band gap and a large ε_elec, and they trade off. The **Pareto "
            "front** holds the structures no other beats on both; dashed curves have constant FoM.")
shown = apply_filters(base_rows, Filters()) if len(scored) else base_rows
if len(shown):
    st.plotly_chart(pareto_figure(shown), width="stretch", key="tour-pareto")
    front = tables.view(pareto_table(shown), ("formula", "band_gap_ev", "eps_elec", "fom_ev", "e_above_hull",
                                              "hull_coverage"))
    st.dataframe(front, hide_index=True, width="stretch", column_config=tables.column_config(front.columns))
    link("explore", "Open any point in 3D on Explore →")
else:
    st.caption("The plot appears once the base samples are scored.")

# ---- 5. RL ---------------------------------------------------------------------------------------
st.header(titles[4], divider="gray")
rl_name = models.rl.name if models.rl is not None else "an RL model"
st.markdown(f"Reinforcement learning let the base model learn from rewards on its own samples. `{rl_name}` was "
            "fine-tuned here with PPO for the reward in its model card (sidebar: **Model card**). Sample it with the "
            "same preset and compare: the table counts every sample; medians use only judged rows.")
if st.button(f"Sample with {rl_name}", type="primary", key="tour-rl", disabled=busy or models.rl is None or not base_run,
             icon=":material/compare:", help="after step 2"):
    sample(models.rl, "rl")
rl_run = run_of("rl")
if base_run and rl_run:
    frames = {base_run: frame_of(base_run), rl_run: frame_of(rl_run)}
    summaries = {name: arm_summary(f) for name, f in frames.items()}
    left, right = st.columns([2, 3])
    with left:
        st.table(rates_table(summaries))
        for line in findings(summaries):
            st.caption(line)
    with right:
        judged = {name: f[f["scored"] & f["trusted"]] for name, f in frames.items()}
        st.plotly_chart(compare_plane_figure(judged, height=420), width="stretch", key="tour-compare")
    st.success("That is the tour. Next: Compare (more samples, any two models), Fine-tune (a few PPO steps live) "
               "and Learn (symmetry, tokens, temperature).", icon=":material/school:")
