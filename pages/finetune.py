"""Fine-tune: a short live PPO run from the browser; the result becomes a selectable checkpoint."""
from dataclasses import replace

import streamlit as st

from app import finetune, state, widgets
from app.checkpoints import CheckpointRef
from app.jobs import Job
from app.plots import ppo_figure
from core.errors import InvalidInputError

widgets.page_header("Fine-tune", "Reinforcement fine-tuning (PPO with a KL penalty to the starting model) for a few "
                                 "steps on this machine: watch reward and KL change, stop any time, and use the "
                                 "result as a new checkpoint.")

ref = state.checkpoint_ref()
job = state.job("finetune")
busy = bool(job and job.running)
run = state.get(state.FINETUNE)
last = run["request"] if run else finetune.FineTuneRequest()   # a page switch drops widget values; keep the settings
with st.form("ft-form"):
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    reward = c1.selectbox("Reward", list(finetune.REWARDS), index=list(finetune.REWARDS).index(last.reward),
                          format_func=finetune.REWARDS.get, key="ft-reward")
    steps = c2.number_input("PPO steps", 1, finetune.MAX_STEPS, last.steps, key="ft-steps")
    batch = c3.number_input("Batch (crystals/step)", 2, finetune.MAX_BATCH, last.batch_size, key="ft-batch")
    tau = c4.number_input("τ (KL weight)", 0.0, 10.0, last.tau if run else None, step=0.1, key="ft-tau", format="%.2f",
                          placeholder="paper: 0.1 / 2", help="empty: the paper's value (0.1 for −E_hull, 2 for FoM)")
    d1, d2, d3, d4 = st.columns([2, 1, 1, 1])
    spacegroup = widgets.spacegroup_picker("ft-sg", default=last.spacegroup, container=d1)
    lr = d2.number_input("Learning rate", 1e-6, 1e-2, last.lr, format="%.0e", key="ft-lr")
    seed = d3.number_input("Seed", 0, 10_000, last.seed, key="ft-seed")
    name = d4.text_input("Save as", key="ft-name", placeholder="automatic")
    start = st.form_submit_button("Start fine-tuning", type="primary", disabled=busy, icon=":material/play_arrow:")
st.caption(f"E_hull rewards use the Score page's potential and hull: {state.score_settings().describe()}. "
           "Each step samples, scores and updates the model; on a CPU a step takes from seconds (small models) "
           "to minutes (the paper-size model).")



def launch(policy, request: finetune.FineTuneRequest, history: list) -> None:
    """Start (or, with an earlier ``history``, continue) the PPO run as the background job 'finetune'."""
    settings = state.score_settings()
    resume = bool(history)
    state.set_job("finetune", Job("fine-tuning", lambda stop, job: finetune.with_phases(finetune.ppo_steps(
        policy, request, mlip=settings.mlip, hull=settings.hull, resume=resume), job, request.steps),
        total=request.steps).start())
    state.put(state.FINETUNE, {"request": request, "from": policy.name, "policy": policy, "history": history})
    st.rerun()


def use_in_sidebar(label: str) -> None:
    st.session_state["sidebar-ckpt-choice"] = label    # a callback: runs before the sidebar is drawn


if start:
    policy = widgets.load_checkpoint(ref)
    if policy is not None:
        request = finetune.FineTuneRequest(reward, int(steps), int(batch),
                                           float(tau) if tau is not None else finetune.DEFAULT_TAU[reward],
                                           float(lr), spacegroup, int(seed),
                                           name.strip() or finetune.default_name(policy.name, reward))
        try:
            request.check()
            if finetune.name_taken(request.name):
                raise InvalidInputError(f"a checkpoint named {request.name!r} already exists; choose another name "
                                        "(or continue that run below after starting from it)")
        except Exception as exc:  # noqa: BLE001
            widgets.show_error(exc)
        else:
            launch(policy, request, [])

if job is None or run is None:
    st.info("Pick the starting model in the sidebar, choose a reward and press **Start fine-tuning**.")
else:
    request = run["request"]
    widgets.job_progress(job, label=f"PPO from {run['from']} ({finetune.REWARDS[request.reward]})", key="ft-job",
                         rerun_on_progress_s=0.5)
    history = run.get("history", []) + list(job.items)
    if history:
        st.plotly_chart(ppo_figure(history), width="stretch", key="ft-curves")
        st.caption("KL to base is a sample estimate: the mean of ln p_θ(x) − ln p_base(x) over the step's samples "
                   "(nats per crystal). The true KL is ≥ 0; a small batch can give a negative estimate. "
                   f"Reward: {finetune.REWARDS[request.reward]}.")
        percent = st.column_config.NumberColumn(format="percent")
        st.dataframe(finetune.log_table(history), width="stretch", hide_index=True, height=min(400, 38 + 35 * len(history)),
                     column_config={finetune.LOG_COLUMNS[c]: percent for c in finetune.FRACTION_COLUMNS})
    saved = finetune.output_dir(request.name)
    if not job.running and history and (saved / "params.npz").exists():
        label = CheckpointRef(request.name, str(saved), "fine-tuned").label
        st.success(f"Saved as **{request.name}** after {len(history)} PPO steps in {saved}; it is listed as "
                   f"“{label}” in the checkpoint pickers, to generate with it or to compare it with {run['from']} "
                   "on the Compare page.", icon=":material/check_circle:")
        c1, c2, c3, _ = st.columns([1.3, 1, 1.3, 2], vertical_alignment="bottom")
        c1.button("Use it in the sidebar", key="ft-use", on_click=use_in_sidebar, args=(label,),
                  icon=":material/check_circle:")
        more = c2.number_input("More steps", 1, finetune.MAX_STEPS, request.steps, key="ft-more")
        if c3.button("Continue training", key="ft-continue", icon=":material/fast_forward:",
                     help=f"more PPO steps on {request.name}, still with {run['from']} as the KL base"):
            launch(run["policy"], replace(request, steps=int(more)), history)
