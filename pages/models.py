"""Models: download the official CrystalFormer checkpoints, the Alexandria hull and MLIP weights."""
import streamlit as st

from app import downloads, state, widgets
from app.checkpoints import find_checkpoints

widgets.page_header("Models", "Fetch the official CrystalFormer checkpoints (alex20, the paper's configuration), "
                              "the Alexandria convex hull of the paper's E_hull reward, and MLIP weights. Each file "
                              "is checked against its published hash and gets a card with its source and licence.")
st.info(downloads.memory_line(), icon=":material/memory:")

message = state.get("download-outcome")
if message is not None:
    (st.success if message.ok else st.error)(message.text)
    refs = {ref.name: ref for ref in find_checkpoints()}
    picked = state.get("download-picked")
    if message.ok and picked in refs:
        # a callback runs before the sidebar is drawn, so the picker shows the choice on this very run
        st.button("Use it in the sidebar", key="dl-use", icon=":material/check_circle:",
                  on_click=lambda label: st.session_state.update({"sidebar-ckpt-choice": label}),
                  args=(refs[picked].label,))

for kind, items in downloads.catalogue().items():
    st.subheader(downloads.KIND_TITLES[kind])
    for item in items:
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        installed = item.installed()
        c1.markdown(f"**{item.title}** {'· installed' if installed else ''}  \n"
                    f"<small>{downloads.describe(item)}</small>", unsafe_allow_html=True)
        if c2.button("Download" if not installed else "Check again", key=f"dl-{item.name}",
                     icon=":material/download:" if not installed else ":material/verified:"):
            outcome = downloads.run_download(item, c1)
            state.put("download-outcome", outcome)
            state.put("download-picked", item.name)
            st.rerun()          # the sidebar picker is drawn before the page: rerun so it lists the new checkpoint
