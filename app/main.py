"""CrystalFormer-RL Explorer: ``streamlit run app/main.py``.

The entry point sets up the page, the navigation between the pages in ``pages/`` and the sidebar
(the model in use, running jobs). Structures are made by the model and judged by scorers; the pages
show both, and keep every result in the session so switching pages loses nothing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ (not the repo root) on the path
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from disk; a hub lookup would only hang offline

import streamlit as st  # noqa: E402

from app.harness import use_stand_ins  # noqa: E402
from app.navigation import pages  # noqa: E402
from app.state import keep_widget_values  # noqa: E402
from app.runtime import enable_compilation_cache, trace  # noqa: E402
from app.scoring import warm_up  # noqa: E402
from app.widgets import sidebar_checkpoint  # noqa: E402

st.set_page_config(page_title="CrystalFormer-RL Explorer", page_icon=":material/diamond:", layout="wide",
                   menu_items={"About": "CrystalFormer-RL Explorer: generate crystals by space group with "
                                        "CrystalFormer, score them with ML potentials, explore and shortlist."})
enable_compilation_cache()
use_stand_ins(sys.argv[1:])  # test and bench servers pass fast fakes as arguments; a user's run passes none
keep_widget_values()
st.logo(str(ROOT / "app" / "logo.svg"), size="large")
navigation = st.navigation(pages(), position="sidebar")
sidebar_checkpoint()
_started = time.perf_counter()
try:
    navigation.run()
finally:
    trace(f"run {navigation.title!r} {time.perf_counter() - _started:.3f} s")
    warm_up()  # once per server process, after the first page is drawn: scoring models load in the background
