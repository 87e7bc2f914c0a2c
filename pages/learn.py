"""Learn: space groups and Wyckoff positions, a crystal written token by token, temperature, and what RL does."""
import pandas as pd
import streamlit as st

from app import detail, state, widgets
from core import explain as learn
from app.learning import partial_structure, sites_complete, token_table
from app.plots import temperature_figure, token_probability_figure

widgets.page_header("Learn", "How CrystalFormer writes a crystal: symmetry first (space group, Wyckoff "
                             "positions), then atoms one site at a time, then the cell — and how RL reshapes it.")
store = state.get(state.LEARN) or {}
state.put(state.LEARN, store)

# ---- 1. symmetry ----------------------------------------------------------------------------------
st.header("1 · Space group and Wyckoff positions", divider="gray")
c1, c2 = st.columns([1, 2])
with c1:
    g = widgets.spacegroup_picker("learn-sg", default=225, allow_training=False)
    from core.wyckoff import crystal_system, spacegroup_symbol

    st.markdown(f"**{g} {spacegroup_symbol(g)}**, {crystal_system(g)} crystal system.\n\n"
                "A *Wyckoff position* is a set of points that the space group's symmetry operations map onto each "
                "other. Its *multiplicity* is how many atoms one entry places in the conventional cell; fixed "
                "positions (no free coordinate) can hold one element only once. CrystalFormer picks a Wyckoff letter "
                "per site, so every crystal it writes has exactly this symmetry.")
with c2:
    st.dataframe(learn.wyckoff_frame(g), hide_index=True, width="stretch", height=320)

# ---- 2. token by token ----------------------------------------------------------------------------
st.header("2 · A crystal, token by token", divider="gray")
st.markdown("The model reads the sequence left to right and, at each step, gives a probability to every possible "
            "next token. Wyckoff letters and elements are categorical choices; coordinates and the lattice are "
            "continuous (the model gives a density). The crystal's log-likelihood is the sum of the logs.")
ref = state.checkpoint_ref()
b1, b2, _ = st.columns([1, 1, 3])
seed = b1.number_input("Seed", 0, 10_000, 0, key=state.kept("learn-seed"))
if b2.button("Write one crystal", type="primary", key="learn-one", icon=":material/edit:"):
    checkpoint = widgets.load_checkpoint(ref)
    if checkpoint is not None:
        from core.sampler import sample

        try:
            with st.spinner(f"Sampling one crystal in {g} with {checkpoint.name}…"):
                s = sample(checkpoint, g, 1, seed=int(seed))[0]
                store["one"] = {"sample": s, "steps": learn.token_steps(checkpoint, s.tokens), "model": checkpoint.name}
        except Exception as exc:  # noqa: BLE001
            widgets.show_error(exc, "cannot write a crystal")
one = store.get("one")
if one:
    s, steps = one["sample"], one["steps"]
    st.caption(f"{s.formula} in {s.spacegroup}, written by {one['model']}; log p = {learn.total_logp(steps):.2f} nats "
               f"(sum of the {len(steps)} token terms below)")
    k = st.slider("Step", 1, len(steps), len(steps), key="learn-step",
                  help="Move through the sequence; the chart shows the model's choice at this step")
    left, right = st.columns([3, 2])
    table = token_table(steps).iloc[:k]
    with left:
        st.dataframe(table, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(table)),
                     column_config={"step": st.column_config.NumberColumn("Step", format="%d")})
    with right:
        step = steps[k - 1]
        if step.discrete and len(step.options):
            st.plotly_chart(token_probability_figure(step.options, step.token,
                                                     f"{step.kind} choices at step {k}"), width="stretch")
        else:
            st.info(f"Step {k} ({step.kind}) is continuous: {step.note}. "
                    + (f"Log-density {step.logp:.2f}." if step.logp is not None else ""))
    if s.structure is not None:
        placed = sites_complete(steps, k)
        st.markdown(f"**The crystal so far**: {placed} of {s.tokens.num_sites} sites written"
                    + (" (drawn in the final cell: the lattice tokens come last)" if placed else ""))
        partial = partial_structure(s.tokens, placed)
        if partial is None:
            st.caption("No site is complete yet: move the step slider past the first site's z coordinate.")
        else:
            detail.viewer(partial, key=f"learn-view-{placed}")
    else:
        st.warning(f"This token sequence does not make a valid structure: {s.error}")

# ---- 3. temperature -------------------------------------------------------------------------------
st.header("3 · Temperature", divider="gray")
st.markdown("Sampling at temperature T divides the logits by T: T < 1 sharpens the distribution (more typical, "
            "less varied crystals), T > 1 flattens it (more varied, more often implausible).")
t1, t2, t3 = st.columns([2, 1, 1])
temps = t1.multiselect("Temperatures", [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0], default=[0.5, 1.0, 1.5],
                       key=state.kept("learn-temps"))
per_t = t2.number_input("Samples per temperature", 4, 200, 20, key=state.kept("learn-per-t"))
if t3.button("Sample", key="learn-temp-run", disabled=not temps):
    checkpoint = widgets.load_checkpoint(ref)
    if checkpoint is not None:
        from core.sampler import sample

        try:
            with st.spinner(f"Sampling {per_t} crystals at {len(temps)} temperatures…"):
                store["temps"] = {t: sample(checkpoint, g, int(per_t), temperature=t, seed=int(seed)) for t in sorted(temps)}
        except Exception as exc:  # noqa: BLE001
            widgets.show_error(exc, "cannot sample")
if store.get("temps"):
    by_t = store["temps"]
    frame = pd.DataFrame([{"temperature": t, "logp": s.logp} for t, ss in by_t.items() for s in ss])
    a, b = st.columns([3, 2])
    a.plotly_chart(temperature_figure(frame), width="stretch")
    b.dataframe(learn.temperature_summary(by_t), hide_index=True, width="stretch",
                column_config={"buildable": st.column_config.NumberColumn("Buildable", format="%.2f"),
                               "mean atoms": st.column_config.NumberColumn("Mean atoms", format="%.1f"),
                               "mean log p (nats)": st.column_config.NumberColumn(format="%.1f")})

# ---- 4. RL ----------------------------------------------------------------------------------------
st.header("4 · What reinforcement learning does", divider="gray")
st.markdown(r"""
Pre-training teaches the model what known crystals look like. **Reinforcement fine-tuning** then lets it learn
from its *own* samples: each sample gets a **reward** $r(x)$ from a discriminative model — the negative energy
above the convex hull from an ML potential (stability), or the figure of merit $\varepsilon_\mathrm{elec}\cdot E_g$
from property models (dielectrics) — and the model is nudged towards high-reward crystals. A penalty on the
**KL divergence to the base model**, weighted by $\tau$, keeps it from forgetting what crystals look like:

$$\max_\theta\; \mathbb{E}_{x\sim p_\theta}\Big[r(x) - \tau \ln \frac{p_\theta(x)}{p_\mathrm{base}(x)}\Big]$$

The best possible policy is $p_\mathrm{base}(x)\,e^{r(x)/\tau}/Z$: the base model re-weighted towards high reward,
like a Bayesian posterior with the base model as prior. The paper optimises this with PPO (clip 0.2, τ = 0.1 for
stability, τ = 2 for FoM).

**What it achieved** (Cao & Wang, *CrystalFormer-RL*):
- Stability (Fig. 3, 1000 samples each): 44.7 % of the base model's samples have $E_\mathrm{hull}$ < 0.1 eV/atom;
  relaxing them with the ML potential raises that to 57.8 %; the RL model reaches **73.4 % without relaxation**,
  because RL changes Wyckoff sites, coordinates and lattices globally while relaxation only moves atoms locally.
- S.U.N. (stable, unique, novel) rate (Fig. 5): 15.3 % (base) → 18.3 % (supervised fine-tuning on stable samples)
  → **21.6 %** (RL). The KL to the base stays orders of magnitude below the pre-training loss change (Fig. 2).
- Dielectrics (Fig. 6, space group 225): RL with the FoM reward moves most samples past ε·E_g = 10 eV, mostly by
  widening the band gap, with little cost in stability; DFT confirms e.g. Cs₂LiLuF₆ (FoM 17.5 eV, not in the
  training set) and CsCaF₃ (16.1 eV).

Try it: the **Fine-tune** page runs a few PPO steps live; **Compare** puts a base and an RL model side by side.
""")
