"""Reusable Streamlit widgets: page header, error messages, checkpoint / space group / element pickers,
scoring settings and job progress.

Widgets only collect choices and show state; they never compute results (those happen on an explicit
button press in the pages and are kept in ``app.state``).
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Callable

import streamlit as st

from app import checkpoints as ck
from app import state
from app.jobs import Job
from core.errors import CheckpointError, CrystalFormerError, InvalidInputError, MissingResourceError

TRAINING = "training distribution"
OTHER_PATH = "Other checkpoint (path)…"


# ---------------------------------------------------------------------------------------------
# page furniture and messages
# ---------------------------------------------------------------------------------------------
def page_header(title: str, explanation: str) -> None:
    """Every page opens the same way: a title and one line saying what the page is for."""
    st.title(title)
    st.caption(explanation)


def error_text(exc: BaseException, context: str = "") -> tuple[str, str]:
    """(level, message) for an exception: level 'warning' for bad input, 'error' otherwise.

    The core's typed errors already name what is missing and how to fix it; anything else is shown
    as its type and message (a bug, but the page keeps working).
    """
    prefix = f"{context[:1].upper()}{context[1:]}: " if context else ""
    if isinstance(exc, InvalidInputError):
        return "warning", f"{prefix}{exc}"
    if isinstance(exc, MissingResourceError):
        return "error", f"{prefix}missing — {exc}"
    if isinstance(exc, CheckpointError):
        return "error", f"{prefix}unusable checkpoint — {exc}"
    if isinstance(exc, CrystalFormerError):
        return "error", f"{prefix}{exc}"
    return "error", f"{prefix}{type(exc).__name__}: {exc}"


def show_error(exc: BaseException, context: str = "") -> None:
    level, text = error_text(exc, context)
    if level == "warning":
        st.warning(text, icon=":material/warning:")
    else:
        st.error(text, icon=":material/error:")


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def checkpoint_picker(key: str, label: str = "Checkpoint", default: str | tuple[str, ...] | None = None,
                      container=None) -> ck.CheckpointRef | None:
    """Shipped / fine-tuned checkpoints, or a typed path (official .pkl + optional config JSON).

    ``default``: a checkpoint name, or names in order of preference (the first one present is chosen).
    The choice and typed paths survive page switches (``state.kept``).
    """
    box = container or st
    refs = ck.find_checkpoints()
    options = [r.label for r in refs] + [OTHER_PATH]
    names = [r.name for r in refs]
    preferred = [default] if isinstance(default, str) or default is None else list(default)
    index = next((names.index(d) for d in preferred if d in names), 0)
    choice = box.selectbox(label, options, index=index, key=state.kept(f"{key}-choice"),
                           help=f"Folders with params.npz or a .pkl under {ck.settings.checkpoints_dir()} "
                                f"or {ck.finetuned_dir()}")
    if choice != OTHER_PATH:
        return refs[options.index(choice)]
    path = box.text_input("Checkpoint path", key=state.kept(f"{key}-path"),
                          placeholder="/path/to/epoch_005500.pkl or folder",
                          help="Our folder format (config.json + params.npz) or an official CrystalFormer .pkl")
    config = box.text_input("Config JSON (official .pkl only, optional)", key=state.kept(f"{key}-config"),
                            help="Hyperparameters of the pickle; empty = the paper's (16 layers, 16 heads)")
    if not path.strip():
        box.info("Enter the path of a checkpoint folder or .pkl file.")
        return None
    return ck.from_path(path, config)


def load_checkpoint(ref: ck.CheckpointRef | None, container=None):
    """The loaded checkpoint, or None with an inline message saying what is wrong and how to fix it."""
    from app import resources

    box = container or st
    if ref is None:
        box.warning(f"No checkpoint selected. Shipped checkpoints go in {ck.settings.checkpoints_dir()} "
                    "(set CFRL_CHECKPOINTS_DIR to use another folder), or pick “Other checkpoint (path)…”.")
        return None
    try:
        with st.spinner(f"Loading {ref.name}…"):
            return resources.load_checkpoint(ref)
    except Exception as exc:  # noqa: BLE001
        with container if container is not None else contextlib.nullcontext():
            show_error(exc, f"cannot load checkpoint {ref.name}")
        return None


def sidebar_checkpoint() -> None:
    """The sidebar: global checkpoint choice (Generate, Learn, Fine-tune use it) and its facts."""
    with st.sidebar:
        st.markdown("### Model")
        refs = ck.find_checkpoints()
        if not refs:
            st.warning(f"No checkpoints in {ck.settings.checkpoints_dir()}. Put one there (folder with "
                       "params.npz, or an official .pkl), set CFRL_CHECKPOINTS_DIR, or type a path below.")
        current = state.checkpoint_ref()
        ref = checkpoint_picker("sidebar-ckpt", default=current.name if current else "base")
        state.put(state.CHECKPOINT, ref)
        loaded = load_checkpoint(ref) if ref is not None else None
        if loaded is not None:
            from app.generation import warm_up

            warm_up(loaded)  # compile the sampler in the background before the first Generate click
            facts = ck.describe(loaded)
            st.markdown("\n".join(f"- **{k}**: {v}" for k, v in facts.items() if k != "name"))
        if ref is not None:
            model_card_popover(ref)
        running = state.any_running()
        if running:
            st.markdown("### Running")
            for job in running:
                st.caption(f"{job.name}: {job.status_line()}")


def model_card_popover(ref: ck.CheckpointRef) -> None:
    """The checkpoint's MODEL_CARD.md (what it is, its size and data) one click from the sidebar."""
    card = ck.model_card(ref)
    with st.popover("Model card", icon=":material/description:", width="stretch",
                    help="what this checkpoint is, how big, trained on what, and its limits"):
        if card:
            st.markdown(card)
        else:
            st.markdown(f"**{ref.label}** ships no MODEL_CARD.md (expected in {ref.path}). The facts above come "
                        "from its config and meta.json.")


# ---------------------------------------------------------------------------------------------
# space groups and elements
# ---------------------------------------------------------------------------------------------
@functools.cache
def spacegroup_options() -> tuple[str, ...]:
    """'training distribution' then '1 P1 (triclinic)' … '230 Ia-3d (cubic)'."""
    from core.wyckoff import spacegroup_label

    return (TRAINING,) + tuple(spacegroup_label(g) for g in range(1, 231))


def parse_spacegroup_option(option: str) -> int | str:
    """The picker's option -> 225 or 'train'."""
    return "train" if option == TRAINING else int(option.split()[0])


def spacegroup_picker(key: str, default: int | str = 225, allow_training: bool = True, container=None) -> int | str:
    """A space group 1–230, or 'train' (each sample's group drawn from the training data).

    ``default``: a number or 'train' (without ``allow_training``, 'train' falls back to 225). The
    choice survives page switches (``state.kept``).
    """
    box = container or st
    options = spacegroup_options() if allow_training else spacegroup_options()[1:]
    wanted = TRAINING if default == "train" else str(default)
    index = next((k for k, o in enumerate(options) if o == wanted or o.split()[0] == wanted),
                 options.index(spacegroup_options()[225]))
    choice = box.selectbox("Space group", options, index=index, key=state.kept(key),
                           help="Number, Hermann–Mauguin symbol and crystal system; type to search. "
                                "“training distribution” draws each sample's space group from the "
                                "checkpoint's training data.")
    return parse_spacegroup_option(choice)


@functools.cache
def element_symbols() -> tuple[str, ...]:
    from pymatgen.core import Element

    return tuple(Element.from_Z(z).symbol for z in range(1, 119))


# ---------------------------------------------------------------------------------------------
# scoring settings and progress
# ---------------------------------------------------------------------------------------------
def score_settings_form(key: str = "score", container=None):
    """MLIP, relax, hull reference, novelty reference; stores and returns a ScoreSettings."""
    from app import scoring

    box = container or st
    current = state.score_settings()
    names = scoring.mlip_names()
    c1, c2, c3, c4 = box.columns([1.2, 0.8, 1.4, 1.6])
    mlip = c1.selectbox("Interatomic potential", names,
                        index=names.index(current.mlip) if current.mlip in names else 0, key=state.kept(f"{key}-mlip"),
                        help="Energies for E_hull; m3gnet is trained on Materials Project energies (MP2020-compatible)")
    relax = c2.toggle("Relax first", value=current.relax, key=state.kept(f"{key}-relax"),
                      help="FIRE + cell filter, fmax 0.1 eV/Å, ≤ 500 steps; slower (rows arrive one by one)")
    hull_options = list(scoring.hull_kinds()) + ["entries file…", "none"]
    hull_now = current.hull if current.hull in hull_options else "entries file…"
    hull = c3.selectbox("Hull reference", hull_options, index=hull_options.index(hull_now),
                        key=state.kept(f"{key}-hull"),
                        help="bundled: MP structures + elements computed with the same MLIP (offline); "
                             "mp-api: Materials Project (needs MP_API_KEY); or a pymatgen entries JSON")
    if hull == "entries file…":
        hull = c3.text_input("Entries file", value=current.hull if hull_now == "entries file…" else "",
                             key=state.kept(f"{key}-hull-path"),
                             placeholder="../shared/data/hulls/Li-Co-Ni-O.json.gz").strip() or "none"
    novelty_keys = list(scoring.NOVELTY_KINDS)
    novelty = c4.selectbox("Novelty against", novelty_keys, format_func=scoring.NOVELTY_KINDS.get,
                           index=novelty_keys.index(current.novelty) if current.novelty in novelty_keys else 0,
                           key=state.kept(f"{key}-novelty"))
    settings = current.with_(mlip=mlip, relax=relax, hull=hull, novelty=novelty)
    state.put(state.SCORE_SETTINGS, settings)
    return settings


def launch(job_name: str, start: Callable[[], Job], notes: list[str] | tuple = (), what: str = "start") -> Job | None:
    """Start a background job (replacing and stopping the previous one of that name); an inline
    message and None when it cannot start."""
    try:
        job = start()
    except Exception as exc:  # noqa: BLE001
        show_error(exc, f"cannot {what}")
        return None
    job.notes = list(notes)
    return state.set_job(job_name, job)


def start_scoring(targets, settings, job_name: str = state.WORK) -> Job | None:
    """Score pool entries in a background job; inline message and None when impossible."""
    from app import scoring

    if not any(ids for _, ids in targets):
        st.info("Nothing to score: every structure already has a score row (or none could be built).")
        return None
    settings, notes = scoring.effective(settings)
    return launch(job_name, lambda: scoring.start_scoring(targets, settings, name="scoring"), notes, "start scoring")


def job_progress(job: Job | None, *, label: str, on_finish: Callable[[], None] | None = None,
                 key: str = "job", rerun_on_progress_s: float | None = None, stoppable: bool = True) -> None:
    """A live progress block for a background job, refreshed every second while it runs, with Stop.

    When the job ends the whole page reruns once (so tables and plots show the final state); with
    ``rerun_on_progress_s`` it also reruns when new items arrived, at most that often (seconds).
    """
    if job is None:
        return

    @st.fragment(run_every=1.0 if job.running else None)
    def block() -> None:
        total = job.total or 0
        fraction = (job.done / total) if total else (1.0 if not job.running else 0.0)
        st.progress(min(1.0, fraction), text=f"{label}: {job.status_line()}")
        for note in job.notes:
            st.warning(note, icon=":material/warning:")
        if job.running and stoppable:
            if st.button("Stop", key=f"{key}-stop", type="secondary", icon=":material/stop_circle:"):
                job.stop()
                st.toast("Stopping after the current batch…")
        elif job.error:
            st.error(f"{label} ended with an error: {job.error}", icon=":material/error:")
        seen = state.get(f"{key}-seen")
        status = (job.running, job.done, job.phase)
        state.put(f"{key}-seen", status)
        if seen is None or seen == status:
            return
        if not job.running:
            if on_finish:
                on_finish()
            st.rerun()
        last = state.get(f"{key}-rerun-at", 0.0)
        if rerun_on_progress_s is not None and time.time() - last >= rerun_on_progress_s:
            state.put(f"{key}-rerun-at", time.time())
            st.rerun()

    block()


# ---------------------------------------------------------------------------------------------
# the chemist's filters (Score, Explore)
# ---------------------------------------------------------------------------------------------
def chemistry_filters(frame, pool, key: str) -> dict:
    """Run, element (contains / excludes), formula, crystal system and space group filters in one expander.

    Returns keyword arguments for ``app.explore.Filters`` (empty selections filter nothing). The
    choices survive page switches (``state.kept``).
    """
    from app.explore import CRYSTAL_SYSTEMS, spacegroup_numbers

    runs = pool.run_names()
    present = sorted({el for els in frame.get("elements", []) for el in (els or ())})
    groups = sorted({int(g) for g in spacegroup_numbers(frame) if g == g})
    active = sum(bool(st.session_state.get(f"{key}-{k}")) for k in ("runs", "contains", "excludes", "formula",
                                                                     "systems", "groups"))
    title = "Filter by run, elements, formula, symmetry" + (f" ({active} active)" if active else "")
    with st.expander(title, expanded=bool(active), icon=":material/filter_alt:"):
        c1, c2, c3 = st.columns([2, 1.5, 1.5])
        chosen_runs = c1.multiselect("Runs", runs, key=state.kept(f"{key}-runs"), placeholder="all runs",
                                     help="Each Generate click, uploaded file and screen is a run; several side by side")
        contains = c2.multiselect("Contains all of", present, key=state.kept(f"{key}-contains"), placeholder="any element")
        excludes = c3.multiselect("Contains none of", present, key=state.kept(f"{key}-excludes"), placeholder="none excluded")
        d1, d2, d3 = st.columns([1.5, 2, 1.5])
        formula = d1.text_input("Formula contains", key=state.kept(f"{key}-formula"), placeholder="e.g. CsF or Li",
                                help="case-insensitive part of the reduced formula")
        systems = d2.multiselect("Crystal system", CRYSTAL_SYSTEMS, key=state.kept(f"{key}-systems"), placeholder="any")
        chosen_groups = d3.multiselect("Space group", groups, key=state.kept(f"{key}-groups"), placeholder="any",
                                       help="as found by spglib (0.1 Å) when scored, else the one generated in")
    return dict(runs=tuple(r for r in chosen_runs if r in runs), contains=tuple(contains), excludes=tuple(excludes),
                formula=formula or "", crystal_systems=tuple(systems), spacegroups=tuple(int(g) for g in chosen_groups))
