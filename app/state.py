"""Everything a browser session keeps between reruns, in one place (``st.session_state`` keys).

Results live here, never in widgets: generated and uploaded structures with their scores (a
``Pool``), the running jobs, the selected structure, the Compare page's two samples, the Fine-tune
history. Pages read and write through these accessors, so a page switch or a widget change never
loses or recomputes anything.

Widget values are Streamlit's own, and Streamlit forgets those of a page that is not drawn. A widget
whose key goes through ``kept(key)`` keeps its value across page switches: ``keep_widget_values()``
(called by ``app/main.py`` at the start of every run) remembers such values and puts them back when
Streamlit has dropped them.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from app.checkpoints import CheckpointRef
from app.jobs import Job
from app.pool import Pool

POOL = "pool"                    # the Generate/Score/Explore pool
COMPARE = "compare"              # {"arms": {label: Pool}, "settings": dict}
CHECKPOINT = "checkpoint_ref"    # CheckpointRef chosen in the sidebar
SCORE_SETTINGS = "score_settings"
SELECTED = "selected_id"         # pool id shown in Explore
JOBS = "jobs"                    # name -> Job
WORK = "work"                    # the job generating / scoring the main pool
FINETUNE = "finetune"            # {"history": [...], "out": path, ...}
LEARN = "learn"                  # cached teaching results
KEPT = "kept-widgets"            # keys of the widgets whose values survive page switches (see kept)
KEPT_VALUES = "kept-values"      # kept widget key -> its last value


def pool() -> Pool:
    if POOL not in st.session_state:
        st.session_state[POOL] = Pool()
    return st.session_state[POOL]


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def checkpoint_ref() -> CheckpointRef | None:
    return st.session_state.get(CHECKPOINT)


def score_settings():
    from app.scoring import default_settings

    if SCORE_SETTINGS not in st.session_state:
        st.session_state[SCORE_SETTINGS] = default_settings()
    return st.session_state[SCORE_SETTINGS]


def job(name: str) -> Job | None:
    return st.session_state.setdefault(JOBS, {}).get(name)


def set_job(name: str, new: Job) -> Job:
    """Register a job under ``name``, stopping the one it replaces."""
    jobs = st.session_state.setdefault(JOBS, {})
    old = jobs.get(name)
    if old is not None and old.running:
        old.stop()
    jobs[name] = new
    return new


def any_running() -> list[Job]:
    return [j for j in st.session_state.get(JOBS, {}).values() if j.running]


def kept(key: str) -> str:
    """``key``, registered as a widget key whose value survives page switches (``key=state.kept("cmp-num")``).

    Only for widgets whose value may be set through ``st.session_state`` (inputs, selections, toggles,
    sliders), not buttons, uploads or chart selections.
    """
    st.session_state.setdefault(KEPT, set()).add(key)
    return key


def keep_widget_values() -> None:
    """Remember the value of every ``kept`` widget, and restore the ones Streamlit dropped.

    Streamlit removes a widget's value at the end of a run that did not draw it (any page switch);
    run before the page, this puts the remembered value back, so the widget starts from it.
    """
    memory = st.session_state.setdefault(KEPT_VALUES, {})
    for key in st.session_state.get(KEPT, ()):
        if key in st.session_state:
            memory[key] = st.session_state[key]
        elif key in memory:
            st.session_state[key] = memory[key]
