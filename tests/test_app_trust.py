"""Trust in the app: error bars on the gap–ε plane, ± in the property card, feasibility badges, the
shortlist's assessment and its DFT input download (AppTest on the real entry point)."""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from app import detail, shortlisting
from app.plots import pareto_figure
from scoring_doubles import rocksalt

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


def plane_frame(with_std: bool) -> pd.DataFrame:
    frame = pd.DataFrame({"id": [1, 2, 3], "formula": ["A", "B", "C"], "band_gap_ev": [1.0, 3.0, 2.0],
                          "eps_elec": [8.0, 3.0, 5.0], "fom_ev": [8.0, 9.0, 10.0], "e_above_hull": [0.0, 0.05, np.nan]})
    if with_std:
        frame["eps_elec_std"] = [0.5, np.nan, 1.0]
    return frame


def test_pareto_error_bars_only_when_sigma_columns_exist():
    plain, barred = pareto_figure(plane_frame(False)), pareto_figure(plane_frame(True))
    assert [t.name for t in plain.data] == [t.name for t in barred.data]      # clicks refer to traces by position
    structures = next(t for t in barred.data if t.name == "structures")
    assert list(structures.error_y.array) == [0.5, 0.0] and structures.error_x.array is None
    without_hull = next(t for t in barred.data if t.name != "structures" and t.error_y.array is not None)
    assert list(without_hull.error_y.array) == [1.0]
    assert all(t.error_y.array is None for t in plain.data)


def test_property_card_shows_sigma_and_committee_mean():
    card = dict(detail.property_card({"e_above_hull": 0.02, "e_above_hull_mean": 0.035, "e_above_hull_std": 0.012,
                                      "eps_elec": 4.0, "eps_elec_std": 0.25, "fom_ev": 12.0, "fom_ev_std": 0.75,
                                      "fom_ev_lcb": 11.25, "novel": True, "unique": math.nan}))
    assert card["E_hull"] == "0.035 ± 0.012 eV/atom"
    assert card["ε_elec"] == "4.00 ± 0.25" and card["FoM ε·E_g"] == "12.00 ± 0.75 eV"
    assert card["FoM − 1σ"] == "11.25 eV" and card["Novel"] == "yes" and "Unique" not in card


def test_badges_and_stored_feasibility():
    checks = detail.feasibility_checks(rocksalt(5.0, ("Cd", "O")), {"e_above_hull": 0.02})
    text = detail.badges_html(checks)
    assert text.count("<span") == len(checks) and "✗ non-toxic, non-radioactive" in text and "✓ stable" in text
    assert 'title="highly toxic Cd"' in text
    props = shortlisting.properties_of({"e_above_hull": 0.5, "eps_elec_std": np.float64(0.2)}, rocksalt())
    assert props["eps_elec_std"] == 0.2 and props["feasible_stable"] is False and props["feasible_charge_balanced"] is True
    assert props["feasibility_failed"] == 1


@pytest.fixture
def app_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CFRL_APP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_shortlist_page_assesses_and_offers_dft_inputs(app_data):
    from streamlit.testing.v1 import AppTest

    from core.shortlist import Shortlist

    store = Shortlist()
    store.add(rocksalt(), properties={"band_gap_ev": 5.0, "eps_elec": 2.3, "fom_ev": 11.5, "e_above_hull": 0.0},
              source="upload")
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    store.add(cscl, properties={"band_gap_ev": 5.5, "eps_elec": 2.6, "fom_ev": 14.3, "e_above_hull": 0.02}, source="upload")
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.run()
    at.switch_page("../pages/shortlist.py").run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("DFT inputs (all 2)") for label in labels)
    assert any("Feasibility" in m.value for m in at.markdown)                 # badges in the detail panel
    assert not [b for b in at.button if b.label.startswith("Assess")]       # the trust panel is built only when open
    at.session_state["shortlist-trust"] = True                                # open it
    at.run()
    next(b for b in at.button if b.label.startswith("Assess all 2")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    entries = store.entries()
    for entry in entries:
        props = entry.properties
        assert props["eps_elec_n"] == 3 and props["eps_elec_std"] > 0 and props["fom_ev_std"] > 0
        assert props["feasible_charge_balanced"] is True and "feasibility_failed" in props
    editor = at.dataframe[0].value
    assert "eps_elec_std" in editor.columns and editor["eps_elec_std"].notna().all()
    # the download's bytes: one folder per entry, parseable inputs
    data = shortlisting.dft_inputs_zip(store, [e.id for e in entries])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    assert {f"dft_inputs/{e.name}/3_dielectric/INCAR" for e in entries} <= set(names)
