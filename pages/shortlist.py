"""Shortlist: the candidates kept from Explore, with notes and tags, uncertainty and feasibility, exported as CIF zip, CSV or DFT input sets."""
import streamlit as st

from app import detail, shortlisting, tables, widgets
from app.navigation import link
from app.shortlist_edits import Edits

widgets.page_header("Shortlist", "Candidates you kept, stored on disk (they survive restarts and are shared by "
                                 "every browser session). Edit notes and tags in the table; check how far to trust "
                                 "each score; export as CIF files, CSV or DFT input sets.")
try:
    store = shortlisting.store()
    listing = store.list()
except Exception as exc:  # noqa: BLE001
    widgets.show_error(exc, "cannot open the shortlist")
    st.stop()
st.caption(f"{len(listing)} {'entry' if len(listing) == 1 else 'entries'} in {store.path}")
if listing.empty:
    st.info("Nothing kept yet: open a structure on the Explore page and press **Add to shortlist**.")
    link("explore", "Go to Explore")
    st.stop()

edits = st.session_state.setdefault("shortlist-edits", Edits())   # unsaved edits and selection, by entry id
table = edits.table(shortlisting.editable_frame(listing), listing)
config = tables.column_config(table.columns)
config["select"] = st.column_config.CheckboxColumn("Select", help="rows to export or remove")
config["notes"] = st.column_config.TextColumn("Notes", width="large")
config["tags"] = st.column_config.TextColumn("Tags", help="comma-separated")
editor_key = edits.editor_key()
st.caption("Notes and tags are saved as soon as you leave the cell (Enter, Tab or a click elsewhere).")
st.data_editor(table, key=editor_key, hide_index=True, width="stretch", column_config=config,
               disabled=[c for c in table.columns if c not in ("select", "notes", "tags")],
               on_change=lambda: edits.commit(st.session_state[editor_key].get("edited_rows"), store))
if edits.saved_ids:
    st.toast("Saved notes & tags of " + ", ".join(f"#{i}" for i in edits.saved_ids))
    edits.saved_ids = []
for notice in edits.notices:      # until the next edit: a removed entry's text stays readable
    st.warning(notice, icon=":material/warning:")
chosen = sorted(edits.selected)
scope = chosen or [int(i) for i in listing["id"]]
scope_text = f"{len(chosen)} selected" if chosen else f"all {len(scope)}"

for entry_id, now in edits.conflicts().items():   # the list changed underneath an unsaved edit: say so
    mine = edits.pending[entry_id]
    if now is None:
        st.warning(f"Entry #{entry_id} was removed in another session. Your unsaved notes: {mine['notes']!r}, "
                   f"tags: {mine['tags']!r}.", icon=":material/warning:")
        if st.button("Dismiss", key=f"shortlist-dismiss-{entry_id}"):
            edits.discard(entry_id)
            st.rerun()
        continue
    st.warning(f"Entry #{entry_id} was changed in another session while you edited it: stored now notes "
               f"{now['notes']!r}, tags {now['tags']!r}; yours (unsaved) notes {mine['notes']!r}, tags "
               f"{mine['tags']!r}.", icon=":material/warning:")
    k1, k2 = st.columns(2)
    if k1.button("Keep mine (overwrite theirs)", key=f"shortlist-mine-{entry_id}"):
        edits.keep_mine(entry_id)
        edits.commit({}, store)
        st.rerun()
    if k2.button("Take theirs (drop my edit)", key=f"shortlist-theirs-{entry_id}"):
        edits.discard(entry_id)
        st.rerun()

c1, c2, c3, c4, c5 = st.columns([1.35, 1.25, 1.05, 0.85, 1.2])   # widths follow the labels
retry = edits.unsaved()     # edits the store could not write (e.g. busy): offered again, never dropped
if retry and c1.button(f"Save again ({len(retry)})", type="primary", key="shortlist-save"):
    edits.commit({}, store)
    st.rerun()
if c2.button(f"Remove selected ({len(chosen)})", disabled=not chosen, key="shortlist-remove"):
    for entry_id in chosen:
        store.remove(entry_id)
    st.rerun()
try:
    from core.export import properties_csv

    # built when clicked (a callable), not on every rerun: 500 CIFs take seconds. No rerun on the click
    # (on_click="ignore"): a rerun that finishes first forgets the callable, and the browser's request for the
    # file then fails ("Deferred file ... not found", seen under load in bench/shortlist_load.py)
    c3.download_button(f"CIF zip ({scope_text})", lambda: shortlisting.cif_zip_of(store, scope), file_name="shortlist-cifs.zip",
                       mime="application/zip", key="shortlist-zip", on_click="ignore", icon=":material/download:")

    def scope_csv() -> bytes:
        rows = store.list()
        return properties_csv(rows[rows["id"].isin(scope)])

    c4.download_button(f"CSV ({scope_text})", scope_csv,
                       file_name="shortlist.csv", mime="text/csv", key="shortlist-csv", on_click="ignore", icon=":material/download:",
                       help="one row per entry; tags as a JSON list")
    c5.download_button(f"DFT inputs ({scope_text})", lambda: shortlisting.dft_inputs_zip(store, scope),
                       file_name="shortlist-dft-inputs.zip", mime="application/zip", key="shortlist-dft", on_click="ignore",
                       icon=":material/download:",
                       help="a zip of pymatgen Materials Project input sets per candidate: relaxation, static and DFPT "
                            "dielectric runs (INCAR, KPOINTS, POSCAR, POTCAR.spec) and a summary CSV")
except Exception as exc:  # noqa: BLE001
    widgets.show_error(exc, "cannot export")

# computed only while open (on_change="rerun"): the plot of 500 entries costs most of a second on every rerun
trust = st.expander("How far to trust the scores: uncertainty and feasibility", icon=":material/verified:",
                    key="shortlist-trust", on_change="rerun")
if trust.open:
    with trust:
        st.caption("ε_elec ± σ from the dielectric model's ensemble members, FoM ± σ propagated (first order, "
                   "independent errors), and the feasibility checklist (charge balance, E_hull, relaxation, symmetry, "
                   "novelty, toxic/radioactive and scarce elements). The MLIP committee (M3GNet, CHGNet, SevenNet) adds "
                   "E_hull ± σ but loads two more models and their hull references: minutes on a CPU. "
                   "Calibration against DFT: bench/uncertainty.md.")
        t1, t2 = st.columns([2, 3])
        with_committee = t2.toggle("Include the MLIP committee (slow)", key="shortlist-committee")
        if t1.button(f"Assess {scope_text}", key="shortlist-assess", icon=":material/troubleshoot:"):
            try:
                with st.spinner("Estimating uncertainty and checking feasibility…"):
                    done = shortlisting.assess_entries(store, scope, committee=with_committee)
            except Exception as exc:  # noqa: BLE001
                widgets.show_error(exc, "cannot assess the shortlist")
            else:
                st.toast(f"Assessed {done} entries")
                st.rerun()
        if {"band_gap_ev", "eps_elec"} <= set(listing.columns):
            from app.plots import pareto_figure

            plane = listing[listing["id"].isin(scope)]
            st.plotly_chart(pareto_figure(plane, height=420), width="stretch", key="shortlist-plane")

st.divider()
labels = shortlisting.entry_labels(listing)
pick = st.selectbox("Show entry", list(labels), format_func=labels.get, key="shortlist-pick")
try:
    entry = store.get(pick)
except Exception as exc:  # noqa: BLE001 - removed in another session
    widgets.show_error(exc)
else:
    detail.structure_panel(entry.structure, entry.properties, title=f"{entry.formula} · shortlist #{entry.id}",
                           key=f"s{entry.id}", token_string=entry.token_string)
