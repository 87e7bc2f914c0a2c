"""MLIP interface: registry, input screening, batched predict with per-item errors, every backend.

Independent expectations: hand-made bad structures, symmetry (zero forces in rock salt), finite
differences (forces = -dE/dx, stress = dE/dε / V), batched = one-by-one, the ASE calculator = predict,
and MP DFT energies (``../shared/data/hulls``) for the energy scale each backend declares.
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from core import settings
from core.errors import CheckpointError, InvalidInputError, MissingResourceError, ScoringError
from core.scoring.inputs import InputLimits
from core.scoring.mlip import (
    DEFAULT_MLIP,
    MLIP,
    MLIP_NAMES,
    EnergyResult,
    check_structure,
    load_mlip,
)


def rocksalt(a: float = 5.69) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rattled(a: float = 5.6, seed: int = 0) -> Structure:
    s = rocksalt(a)
    shifts = np.random.default_rng(seed).normal(scale=0.05, size=(len(s), 3))
    return Structure(s.lattice, s.species, s.cart_coords + shifts, coords_are_cartesian=True)


def bad_structures() -> dict[str, tuple[Structure, str]]:
    """Each kind of input the brief lists, with the words its error must contain."""
    nan_lattice = rocksalt()
    nan_lattice.lattice = Lattice(np.full((3, 3), np.nan))
    disordered = rocksalt()
    disordered.replace(0, {"Na": 0.5, "K": 0.5})
    return {
        "nan lattice": (nan_lattice, "non-finite"),
        "overlapping": (Structure(Lattice.cubic(5), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]]), "overlapping"),
        "uncovered element": (Structure(Lattice.cubic(5), ["Og", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "Og not covered"),
        "isolated atom": (Structure(Lattice.cubic(25), ["Na"], [[0, 0, 0]]), "isolated atom"),
        "huge cell": (Structure(Lattice.cubic(2.0e4), ["Na", "Cl"], [[0, 0, 0], [1e-4, 0, 0]]), "huge cell"),
        "disordered": (disordered, "disordered"),
    }


def mp_oxides() -> list[dict]:
    """Small MP GGA+U oxides: their MP2020 corrections are ~ -1 eV/atom, so the two scales are easy to tell apart."""
    entries = json.load(gzip.open(settings.data_dir() / "hulls" / "Na-Fe-P-O.json.gz", "rt"))
    picked = [d for d in entries if d["parameters"]["run_type"] == "GGA+U" and d["e_above_hull"] == 0
              and len(d["structure"]["sites"]) <= 10]
    assert len(picked) >= 2
    return [{"structure": Structure.from_dict(d["structure"]), "raw": d["energy"],
             "corrected": d["energy"] + d["correction"]} for d in picked[:3]]


# --- registry and screening (no model needed) ------------------------------------------------------

def test_registry_names_and_unknown_name():
    assert MLIP_NAMES == ("m3gnet", "m3gnet-matpes", "tensornet-matpes", "chgnet", "sevennet", "sevennet-l3i5",
                          "sevennet-mf-0", "sevennet-mf-ompa", "orb", "orb-v3")
    assert DEFAULT_MLIP == "m3gnet"   # chosen by bench/scoring.md + bench/mlip_accuracy.md
    with pytest.raises(InvalidInputError, match="unknown MLIP 'mace'.*m3gnet"):
        load_mlip("mace")


@pytest.mark.parametrize("kind", list(bad_structures()))
def test_check_structure_rejects_each_bad_kind(kind):
    structure, words = bad_structures()[kind]
    with pytest.raises(ScoringError, match=words):
        check_structure(structure, label="M", elements=frozenset({"Na", "Cl", "K"}), cutoff_a=5.0)


def test_check_structure_accepts_a_crystal_and_applies_limits():
    check_structure(rocksalt(), label="M", elements=frozenset({"Na", "Cl"}), cutoff_a=5.0)
    with pytest.raises(ScoringError, match="too many atoms: 16 > 10"):
        check_structure(rocksalt() * (2, 1, 1), label="M", elements=None, cutoff_a=5.0, limits=InputLimits(max_atoms=10))


# --- the default backend -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def m3gnet():
    return load_mlip("m3gnet", device="cpu")


def test_default_backend_is_cached_and_satisfies_the_protocol(m3gnet):
    assert load_mlip("M3GNet", device="cpu") is m3gnet
    assert isinstance(m3gnet, MLIP)
    assert (m3gnet.name, m3gnet.label, m3gnet.mp_compatible) == ("m3gnet", "M3GNet-MP-2021.2.8-PES", True)


def test_bad_structures_fail_alone_and_the_batch_continues(m3gnet):
    bad = bad_structures()
    batch = [rocksalt(), *(s for s, _ in bad.values()), rattled()]
    results = m3gnet.predict(batch)
    assert len(results) == len(batch)
    for result, (kind, (_, words)) in zip(results[1:-1], bad.items()):
        assert isinstance(result, ScoringError), kind
        assert words in str(result)
    first, last = results[0], results[-1]
    assert isinstance(first, EnergyResult) and isinstance(last, EnergyResult)
    alone = m3gnet.predict([rattled()])[0]
    assert last.energy_ev == pytest.approx(alone.energy_ev, abs=1e-5)
    assert last.forces == pytest.approx(alone.forces, abs=1e-5)
    assert first.forces.shape == (8, 3) and first.stress.shape == (6,)
    assert first.energy_per_atom == pytest.approx(first.energy_ev / 8)
    energy_only = m3gnet.predict(batch, forces=False)
    assert energy_only[-1].forces is None and energy_only[-1].stress is None
    assert energy_only[-1].energy_ev == pytest.approx(last.energy_ev, abs=1e-5)
    assert [type(r) for r in energy_only] == [type(r) for r in results]


def test_a_failing_batch_is_split_so_only_the_culprit_fails(m3gnet, monkeypatch):
    poison = rattled(seed=3)
    original = type(m3gnet)._predict_batch

    def flaky(self, structures, forces):
        if any(s is poison for s in structures):
            raise RuntimeError("CUDA out of memory")
        return original(self, structures, forces)

    monkeypatch.setattr(type(m3gnet), "_predict_batch", flaky)
    results = m3gnet.predict([rocksalt(), poison, rattled()])
    assert isinstance(results[0], EnergyResult) and isinstance(results[2], EnergyResult)
    assert isinstance(results[1], ScoringError) and "out of memory" in str(results[1])



def test_three_body_graph_built_in_tensors_equals_matgls_own(m3gnet):
    """The backend hands M3GNet a line graph built with tensor ops; it must be the one M3GNet builds itself
    (same bond pairs in the same order), so the energies are the same to the bit."""
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph._compute import create_line_graph
    from torch_geometric.data import Batch

    structures = [rattled(seed=1), rocksalt(5.2), Structure(Lattice.cubic(3.0), ["Si"], [[0, 0, 0]])]
    converter = Structure2Graph(m3gnet.potential.model.element_types, m3gnet.cutoff_a)
    graphs = [converter.get_graph(s) for s in structures]
    batch = Batch.from_data_list([g for g, _, _ in graphs])
    lattice = torch.cat([lat.reshape(1, 3, 3) for _, lat, _ in graphs])
    ours = m3gnet._line_graph(batch, lattice)
    pos = (batch.frac_coords.unsqueeze(-1) * lattice[batch.batch]).sum(dim=1)
    shift = (batch.pbc_offset.unsqueeze(-1) * lattice[batch.batch[batch.edge_index[0]]]).sum(dim=1)
    vec = pos[batch.edge_index[1]] + shift - pos[batch.edge_index[0]]
    theirs = create_line_graph(batch.edge_index, vec.norm(dim=1), vec, shift, pos.size(0),
                               m3gnet.potential.model.threebody_cutoff)
    assert ours["line_edge_index"].shape[1] > 1000
    for key in ("line_edge_index", "n_triple_ij", "kept_edge_ids"):
        assert torch.equal(ours[key].long(), theirs[key].long()), key
    with_graph = [e for e, _, _ in m3gnet._predict_batch(structures, False)]
    original = m3gnet._line_graph
    try:
        m3gnet._line_graph = lambda batch, lattice: None   # M3GNet builds its own
        without = [e for e, _, _ in m3gnet._predict_batch(structures, False)]
    finally:
        m3gnet._line_graph = original
    assert with_graph == without



def test_graph_batch_is_the_batch_matgl_builds(m3gnet):
    """Our batched graphs (neighbour lists found once per structure) equal matgl's converter + PyG collate."""
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from torch_geometric.data import Batch

    from core.scoring.backends.matgl_graphs import graph_batch

    structures = [rattled(seed=2), rocksalt(5.2), Structure(Lattice.cubic(3.0), ["Si"], [[0, 0, 0]]),
                  Structure(Lattice.hexagonal(3.2, 5.2), ["Zn", "Zn", "O", "O"],
                            [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.38], [2 / 3, 1 / 3, 0.88]])]
    for cutoff in (4.0, 5.0):
        converter = Structure2Graph(m3gnet.potential.model.element_types, cutoff)
        graphs = [converter.get_graph(s) for s in structures]
        theirs = Batch.from_data_list([g for g, _, _ in graphs])
        ours, lattice = graph_batch(structures, m3gnet.potential.model.element_types, cutoff, with_positions=True)
        for key in ("edge_index", "pbc_offset", "node_type", "frac_coords", "batch", "ptr"):
            assert getattr(ours, key).dtype == getattr(theirs, key).dtype, key
            assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
        assert torch.equal(lattice, torch.cat([lat.reshape(1, 3, 3) for _, lat, _ in graphs]))
        assert ours.num_graphs == len(structures)
        assert torch.equal(ours.pos, torch.cat([g.frac_coords @ lat[0] for g, lat, _ in graphs]))


# --- every backend with weights in the environment -------------------------------------------------

def assert_physics(model, structure: Structure, invariant: bool = True) -> None:
    """Symmetry (for rotation-invariant models), finite differences and calculator agreement for one model."""
    result = model.predict([rocksalt(), structure])
    if invariant:
        assert np.abs(result[0].forces).max() < 2e-3  # rock salt: zero by symmetry
    r = result[1]
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = model.calculator()
    assert atoms.get_potential_energy() == pytest.approx(r.energy_ev, abs=1e-4)
    assert atoms.get_forces() == pytest.approx(r.forces, abs=1e-4)
    assert atoms.get_stress() == pytest.approx(r.stress, abs=1e-5)
    h, eps = 1e-2, 2e-3
    moved, strained = [], []
    for sign in (1, -1):
        m = structure.copy()
        m.translate_sites([0], [sign * h, 0, 0], frac_coords=False, to_unit_cell=False)
        moved.append(m)
        s = structure.copy()
        s.apply_strain([sign * eps, 0, 0])
        strained.append(s)
    e = [x.energy_ev for x in model.predict(moved + strained)]
    assert -(e[0] - e[1]) / (2 * h) == pytest.approx(r.forces[0, 0], abs=5e-3)
    assert (e[2] - e[3]) / (2 * eps) / structure.volume == pytest.approx(r.stress[0], abs=5e-4)


@pytest.mark.parametrize("name", ["chgnet", "sevennet"])
def test_backend_physics_and_energy_scale(name):
    model = load_mlip(name, device="cpu")
    assert_physics(model, rattled())
    oxides = mp_oxides()
    predicted = np.array([r.energy_ev for r in model.predict([o["structure"] for o in oxides])])
    n = np.array([len(o["structure"]) for o in oxides])
    raw = np.abs(predicted - [o["raw"] for o in oxides]) / n
    corrected = np.abs(predicted - [o["corrected"] for o in oxides]) / n
    if model.energy_scale == "mp-raw":  # SevenNet-0: MPtrj uncorrected energies
        assert model.mp_compatible and raw.mean() < 0.3 < 0.7 < corrected.mean()
    else:  # CHGNet: MPtrj MP2020-corrected energies; correcting again would double count
        assert model.energy_scale == "mp2020" and not model.mp_compatible
        assert corrected.mean() < 0.3 < 0.7 < raw.mean()
    bad = model.predict([bad_structures()["uncovered element"][0], rocksalt()])
    assert isinstance(bad[0], ScoringError) and isinstance(bad[1], EnergyResult)


# --- Orb: weights are not obtainable here -----------------------------------------------------------

def test_orb_without_weights_says_which_file_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CFRL_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CFRL_ORB_WEIGHTS", raising=False)
    with pytest.raises(MissingResourceError, match=r"orb-v2-20241011\.ckpt.*https://orbitalmaterials.*CFRL_ORB_WEIGHTS"):
        load_mlip("orb", device="cpu")
    monkeypatch.setenv("CFRL_ORB_WEIGHTS", str(tmp_path / "elsewhere.ckpt"))
    with pytest.raises(MissingResourceError, match="elsewhere.ckpt"):
        load_mlip("orb", device="cpu")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        load_mlip("orb", device="cpu", weights=tmp_path / "broken.ckpt")


def test_orb_random_architecture_runs_through_the_interface():
    import torch

    from core.scoring.backends.orb_backend import build_orb_architecture, orb

    torch.manual_seed(0)
    variant = "orb-v3-conservative-inf-mpa"  # conservative: forces and stress are energy gradients
    model = orb("cpu", model=build_orb_architecture(variant, num_message_passing_steps=1), variant=variant)
    assert model.mp_compatible and model.energy_scale == "mp-raw"
    assert_physics(model, rattled(), invariant=False)  # Orb is not rotation-invariant by construction
    results = model.predict([rattled(), bad_structures()["isolated atom"][0], rocksalt()])
    assert isinstance(results[1], ScoringError) and "isolated atom" in str(results[1])
    assert results[0].energy_ev == pytest.approx(model.predict([rattled()])[0].energy_ev, abs=1e-4)


def test_orb_loads_a_weights_file(tmp_path, monkeypatch):
    import functools

    import torch

    from core.scoring.backends import orb_backend

    # a one-step orb-v2 keeps the file small; the loader builds the same architecture
    small = functools.partial(orb_backend.build_orb_architecture, num_message_passing_steps=1)
    monkeypatch.setattr(orb_backend, "build_orb_architecture", small)
    torch.manual_seed(1)
    random_v2 = small("orb-v2")
    torch.save(random_v2.state_dict(), tmp_path / "orb-v2-20241011.ckpt")
    loaded = load_mlip("orb", device="cpu", weights=tmp_path / "orb-v2-20241011.ckpt")
    assert loaded.variant == "orb-v2" and "orb-v2-20241011.ckpt" in loaded.label
    name, tensor = next(iter(random_v2.state_dict().items()))
    assert torch.equal(loaded.model.state_dict()[name], tensor)
    result = loaded.predict([rocksalt()])[0]
    assert isinstance(result, EnergyResult) and np.isfinite(result.energy_ev)


def test_wheel_sevennet_models_are_on_mp_raw_scale_and_mf0_needs_its_pbe_head():
    """7net-l3i5 and 7net-mf-0 (PBE modal) reproduce MP's raw PBE(+U) energy of DFT-relaxed MP phases
    (independent: the uncorrected energies stored in ../shared/data/hulls); the mf-0 r2SCAN head does not,
    and batched predict agrees with the ASE calculator."""
    from core.scoring.backends.sevennet_backend import SevenNetMLIP

    with gzip.open(settings.data_dir() / "hulls" / "Na-Fe-P-O.json.gz", "rt") as fh:
        raw = [d for d in json.load(fh) if d["is_stable"] and len(d["structure"]["sites"]) <= 8][:4]
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    dft = np.array([e.uncorrected_energy_per_atom for e in entries])
    for name in ("sevennet-l3i5", "sevennet-mf-0"):
        mlip = load_mlip(name, device="cpu")
        assert mlip.mp_compatible and mlip.energy_scale == "mp-raw"
        got = np.array([r.energy_per_atom for r in mlip.predict([e.structure for e in entries])])
        assert np.abs(got - dft).mean() < 0.05 and np.abs(got - dft).max() < 0.15, (name, got - dft)
        atoms = AseAtomsAdaptor.get_atoms(entries[0].structure)
        atoms.calc = mlip.calculator()
        assert atoms.get_potential_energy() / len(atoms) == pytest.approx(got[0], abs=1e-4)
    r2scan = SevenNetMLIP("cpu", "7net-mf-0", modal="R2SCAN", name="x", label="mf-0 r2SCAN")
    other = np.array([r.energy_per_atom for r in r2scan.predict([e.structure for e in entries])])
    assert np.abs(other - dft).mean() > 0.3           # r2SCAN total energies are on another scale
    with pytest.raises(ValueError, match="multi-fidelity.*PBE, R2SCAN"):
        SevenNetMLIP("cpu", "7net-mf-0")


def test_download_only_mlips_name_the_download(monkeypatch, tmp_path):
    monkeypatch.setenv("CFRL_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CFRL_ORB_WEIGHTS", raising=False)
    with pytest.raises(MissingResourceError, match="python -m core download 7net-mf-ompa"):
        load_mlip("sevennet-mf-ompa", device="cpu")
    with pytest.raises(MissingResourceError, match="orb-v3-conservative-inf-mpa-20250404.ckpt"):
        load_mlip("orb-v3", device="cpu")
