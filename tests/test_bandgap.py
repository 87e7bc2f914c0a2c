"""Band gap model: MEGNet-MP-2019.4.1-BandGap-mfi at PBE fidelity, batched, with per-item errors.

Independent expectations: the brief's published NaCl value (5.031 eV), the outputs of matgl's
"Combining the M3GNet Universal Potential with Property Prediction Models" notebook (SrTiO3 at
a = 4.5 Å and 3.937988 Å, all four fidelities), and physics (a metal has no gap).
"""
from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from core.errors import ScoringError
from core.scoring.backends.bandgap import BandGapModel, load_bandgap_model


def rocksalt(a: float = 5.69) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def srtio3(a: float) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0]])


COPPER = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])


@pytest.fixture(scope="module")
def model() -> BandGapModel:
    return load_bandgap_model(device="cpu")


def test_published_pbe_gaps(model):
    nacl, sto_relaxed, sto_expanded = model.predict([rocksalt(), srtio3(3.937988), srtio3(4.5)])
    assert nacl == pytest.approx(5.031, abs=1e-3)
    assert sto_relaxed == pytest.approx(1.72, abs=5e-3)
    assert sto_expanded == pytest.approx(0.16, abs=5e-3)


def test_metal_has_no_gap_and_insulator_beats_metal(model):
    copper, nacl = model.predict([COPPER, rocksalt()])
    assert abs(copper) < 0.1
    assert nacl > 4


@pytest.mark.parametrize(("fidelity", "published"), [("GLLB-SC", 3.22), ("HSE", 3.07), ("SCAN", 2.19)])
def test_other_fidelities_match_the_notebook(fidelity, published):
    assert BandGapModel(device="cpu", fidelity=fidelity).predict([srtio3(3.937988)])[0] == pytest.approx(published, abs=5e-3)


def test_batch_equals_one_by_one_and_bad_items_fail_alone(model):
    isolated = Structure(Lattice.cubic(25), ["Na"], [[0, 0, 0]])
    unknown = Structure(Lattice.cubic(5), ["Og", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    expanded = rocksalt(5.9)
    batch = model.predict([rocksalt(), isolated, COPPER, unknown, expanded])
    assert isinstance(batch[1], ScoringError) and "isolated atom" in str(batch[1])
    assert isinstance(batch[3], ScoringError) and "Og not covered" in str(batch[3])
    for value, structure in ((batch[0], rocksalt()), (batch[2], COPPER), (batch[4], expanded)):
        assert value == pytest.approx(model.predict([structure])[0], abs=1e-5)


def test_model_is_cached_and_rejects_unknown_fidelity(model):
    assert load_bandgap_model(device="cpu") is model
    assert model.label == "MEGNet-MP-2019.4.1-BandGap-mfi (PBE)"
    with pytest.raises(ValueError, match="fidelity"):
        BandGapModel(device="cpu", fidelity="GW")
