"""The app's pages, in menu order (files in ``pages/``)."""
from __future__ import annotations

import streamlit as st

from app.paths import PAGES_DIR

DEFAULT_URL = "generate"   # the page a fresh session opens on

PAGES = (
    # file, title, icon, url
    ("tour.py", "Start here", ":material/flag:", "tour"),
    ("generate.py", "Generate", ":material/auto_awesome:", "generate"),
    ("score.py", "Score", ":material/speed:", "score"),
    ("explore.py", "Explore", ":material/scatter_plot:", "explore"),
    ("compare.py", "Compare", ":material/compare:", "compare"),
    ("shortlist.py", "Shortlist", ":material/bookmark:", "shortlist"),
    ("learn.py", "Learn", ":material/school:", "learn"),
    ("finetune.py", "Fine-tune", ":material/model_training:", "finetune"),
    ("models.py", "Models", ":material/download:", "models"),      # downloads (issue #19)
)


def pages() -> list:
    return [st.Page(PAGES_DIR / f, title=t, icon=i, url_path=u, default=(u == DEFAULT_URL)) for f, t, i, u in PAGES]


def link(url: str, label: str | None = None) -> None:
    """A link to another page by its url name ('explore')."""
    for f, t, i, u in PAGES:
        if u == url:
            st.page_link(PAGES_DIR / f, label=label or t, icon=i)
            return
