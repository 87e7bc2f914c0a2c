"""Committee / ensemble spreads, FoM error propagation and uncertainty-aware ranking."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInputError, ScoringError
from core.scoring import uncertainty
from core.scoring.uncertainty import (
    add_uncertainty,
    committee_e_above_hull,
    confidence_bound,
    dielectric_ensemble,
    fom_uncertainty,
    member_spread,
    rank,
    std_columns,
    with_fom_uncertainty,
)
from scoring_doubles import FakeMLIP, FakePropertyModel, rocksalt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MU = {"Na": -1.31, "Cl": -1.84, "Li": -1.91, "F": -1.91}


@dataclass
class BiasedMLIP(FakeMLIP):
    """FakeMLIP whose energies are ``bias`` eV/atom higher: its E_hull is shift + bias on an elemental hull."""

    bias: float = 0.0

    def energy(self, structure):
        return super().energy(structure) + self.bias * len(structure)


class ElementalHull:
    """A reference holding only the MLIP's elemental phases (energies μ): E_hull = formation energy, exactly."""

    def e_above_hull_many(self, structures, energies, mlip):
        return [SimpleNamespace(e_above_hull=(e - sum(mlip.potentials[el.symbol] * n for el, n in s.composition.items()))
                                / len(s)) for s, e in zip(structures, energies)]


def hull_of(_mlip):
    return ElementalHull()


def test_committee_of_one_model_twice_has_zero_spread():
    structures = [rocksalt(shift=0.12), rocksalt(4.03, ("Li", "F"), shift=-0.3)]
    model = FakeMLIP(dict(MU))
    frame = committee_e_above_hull(structures, [model, model], hull=hull_of)
    assert frame["e_above_hull_std"].tolist() == [0.0, 0.0]
    assert frame["e_above_hull_mean"].to_numpy() == pytest.approx([0.12, -0.3], abs=1e-12)
    assert frame["e_above_hull_n"].tolist() == [2, 2]


def test_committee_spread_is_the_sample_std_of_members():
    # members at shift, shift + 0.1, shift + 0.2 eV/atom: mean shift + 0.1, sample std 0.1
    members = [BiasedMLIP(dict(MU), name=f"m{k}", bias=0.1 * k) for k in range(3)]
    frame = committee_e_above_hull([rocksalt(shift=0.05)], members, hull=hull_of, scale=1.0)
    assert [c for c in frame.columns if c.startswith("e_above_hull_m")] == ["e_above_hull_m0", "e_above_hull_m1",
                                                                            "e_above_hull_m2", "e_above_hull_mean"]
    assert frame.loc[0, "e_above_hull_mean"] == pytest.approx(0.15)
    assert frame.loc[0, "e_above_hull_std"] == pytest.approx(0.1)
    scaled = committee_e_above_hull([rocksalt(shift=0.05)], members, hull=hull_of, scale=2.5)
    assert scaled.loc[0, "e_above_hull_std"] == pytest.approx(0.25)


def test_member_that_cannot_score_a_structure_leaves_the_others():
    # the second member has no table entry for Li: it fails on LiF, the committee keeps one member there
    members = [FakeMLIP(dict(MU), name="full"), BiasedMLIP({"Na": -1.31, "Cl": -1.84}, name="nacl-only", bias=0.2)]
    skipped = []
    frame = committee_e_above_hull([rocksalt(), rocksalt(4.03, ("Li", "F"))], members + ["no-such-mlip"], hull=hull_of,
                                   on_member=lambda name, why: skipped.append((name, why)))
    assert frame["e_above_hull_n"].tolist() == [2, 1]
    assert frame.loc[1, "e_above_hull_std"] == 0.0 and math.isnan(frame.loc[1, "e_above_hull_nacl-only"])
    assert any(name == "no-such-mlip" and why for name, why in skipped)
    with pytest.raises(ScoringError, match="no committee member"):
        committee_e_above_hull([rocksalt()], ["no-such-mlip"], hull=hull_of)


def test_member_spread_edge_cases():
    assert member_spread([1.0]) == (1.0, 0.0, 1)
    mean, std, n = member_spread([None, math.nan])
    assert math.isnan(mean) and math.isnan(std) and n == 0
    assert member_spread([1.0, 3.0, None], scale=2.0) == pytest.approx((2.0, 2.0 * math.sqrt(2.0), 2))


def test_fom_uncertainty_matches_monte_carlo():
    eps, eps_std, gap, gap_std = 8.0, 0.4, 3.0, 0.15
    fom, fom_std = fom_uncertainty(eps, eps_std, gap, gap_std)
    rng = np.random.default_rng(0)
    samples = rng.normal(eps, eps_std, 400_000) * rng.normal(gap, gap_std, 400_000)
    assert float(fom) == pytest.approx(samples.mean(), rel=2e-3)
    assert float(fom_std) == pytest.approx(samples.std(), rel=1e-2)
    # vectorised, and only one uncertain factor: σ_FoM = E_g σ_ε
    _, only_eps = fom_uncertainty([2.0, 4.0], [0.5, 0.5], [1.0, 2.0])
    assert only_eps.tolist() == pytest.approx([0.5, 1.0])


def test_rank_by_mean_or_lower_confidence_bound():
    frame = pd.DataFrame({"formula": ["Sure", "Risky", "Unscored"], "band_gap_ev": [2.0, 2.0, math.nan],
                          "eps_elec": [5.0, 5.5, 3.0], "eps_elec_std": [0.05, 2.0, 0.1]})
    by_mean = rank(frame, "mean")
    assert by_mean["formula"].tolist() == ["Risky", "Sure", "Unscored"]
    by_lcb = rank(frame, "lcb", k=1.0)
    assert by_lcb["formula"].tolist() == ["Sure", "Risky", "Unscored"]
    assert by_lcb["rank"].tolist() == [1, 2, 3]
    assert by_lcb.set_index("formula").loc["Risky", "fom_ev_lcb"] == pytest.approx(11.0 - 4.0)
    with pytest.raises(InvalidInputError):
        rank(frame, "median")
    assert confidence_bound([1.0], [math.nan]).tolist() == [1.0]
    assert confidence_bound([1.0], [0.5], k=2, lower=False).tolist() == [2.0]


def test_with_fom_uncertainty_uses_a_given_gap_sigma():
    frame = pd.DataFrame({"band_gap_ev": [2.0], "eps_elec": [5.0]})
    out = with_fom_uncertainty(frame, gap_std_ev=0.1)
    assert out.loc[0, "fom_ev_std"] == pytest.approx(0.5)     # ε σ_Eg = 5 × 0.1
    assert std_columns(out) == {"band_gap_ev": "band_gap_ev_std", "fom_ev": "fom_ev_std"}


def test_dielectric_ensemble_of_models():
    models = [FakePropertyModel(lambda s: 2.0), FakePropertyModel(lambda s: 8.0, bad="Li")]
    frame = dielectric_ensemble([rocksalt(), rocksalt(4.03, ("Li", "F"))], models, scale=1.0)
    assert frame.loc[0, "eps_elec_mean"] == pytest.approx(4.0)              # geometric mean of 2 and 8
    assert frame.loc[0, "eps_elec_std"] == pytest.approx(np.std([2.0, 8.0], ddof=1))
    assert frame.loc[1, "eps_elec_n"] == 1 and frame.loc[1, "eps_elec_std"] == 0.0


def test_shipped_dielectric_members_average_to_the_model_prediction():
    from core.scoring.dielectric import load_dielectric_model

    model = load_dielectric_model()
    structures = [rocksalt(), rocksalt(4.03, ("Li", "F"))]
    members = uncertainty.dielectric_members(structures, model)
    assert all(len(m) == len(model.boosters) for m in members)
    frame = dielectric_ensemble(structures, model)
    assert frame["eps_elec_mean"].to_numpy() == pytest.approx(model.predict(structures), rel=1e-9)
    assert (frame["eps_elec_std"] > 0).all()
    # NaCl: DFPT/experiment ε∞ ≈ 2.3-2.4; the members must bracket something physical, not diverge
    assert 1.5 < frame.loc[0, "eps_elec_mean"] < 3.5 and frame.loc[0, "eps_elec_std"] < 1.0


def test_add_uncertainty_fills_every_column_and_skips_failed_rows():
    structures = [rocksalt(shift=0.02), None]
    frame = pd.DataFrame({"formula": ["NaCl", None], "band_gap_ev": [4.0, math.nan], "eps_elec": [2.0, math.nan]})
    models = [FakePropertyModel(lambda s: 2.0), FakePropertyModel(lambda s: 2.0)]
    out = add_uncertainty(frame, structures, committee=[FakeMLIP(dict(MU)), FakeMLIP(dict(MU), name="again")],
                          hull=hull_of, dielectric=models, gap_std_ev=0.5)
    for column in uncertainty.UNCERTAIN_COLUMNS:
        assert column in out
    assert out.loc[0, "e_above_hull_mean"] == pytest.approx(0.02) and out.loc[0, "e_above_hull_std"] == 0.0
    assert out.loc[0, "fom_ev_mean"] == pytest.approx(8.0) and out.loc[0, "fom_ev_std"] == pytest.approx(1.0)
    assert math.isnan(out.loc[1, "e_above_hull_mean"]) and math.isnan(out.loc[1, "fom_ev_mean"])
    with pytest.raises(InvalidInputError):
        add_uncertainty(frame, structures[:1])


def test_trust_command_ranks_checks_and_exports(tmp_path, monkeypatch, capsys):
    """``python -m core trust`` end to end with test doubles: one model twice as committee -> σ_Ehull = 0."""
    from pymatgen.io.vasp import Incar

    from core import cli
    from core.scoring import hull, mlip, pipeline

    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    fake = FakeMLIP({**MU, "Mg": -1.60, "O": -4.95})
    monkeypatch.setattr(mlip, "load_mlip", lambda name=None, device=None, **kw: fake)
    # relaxation runs for real: the fake's forces and stress are zero, so FIRE stops at once
    monkeypatch.setattr(pipeline, "load_property_models",
                        lambda device=None: (FakePropertyModel(lambda s: 0.5 * len(s)), FakePropertyModel(lambda s: 2.0)))
    hull._STORES.clear()
    hull._REFERENCES.clear()
    folder = tmp_path / "in"
    folder.mkdir()
    rocksalt().to(filename=str(folder / "a.cif"))
    rocksalt(4.2, ("Mg", "O")).to(filename=str(folder / "b.cif"))
    (folder / "c.cif").write_text("data_broken\n_cell_length_a nonsense\n")
    out, dft = tmp_path / "trust.csv", tmp_path / "dft"
    code = cli.main(["trust", str(folder), "--relax", "--mlip", "m3gnet", "--committee", "m3gnet,chgnet", "--rank", "lcb", "--out", str(out),
                     "--dft-out", str(dft), "--top", "1", "--quiet"])
    hull._STORES.clear()
    hull._REFERENCES.clear()
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert table["rank"].tolist() == [1, 2, 3] and table["label"].iloc[-1].startswith("c.cif")
    scored = table.dropna(subset=["e_above_hull_mean"])
    assert len(scored) == 2 and (scored["e_above_hull_std"] == 0).all()
    assert (scored["fom_ev_lcb"] <= scored["fom_ev_mean"]).all()
    assert scored["feasible_charge_balanced"].astype(bool).all() and scored["feasible_relaxation_ok"].astype(bool).all()
    assert scored["feasible_symmetry_kept"].astype(bool).all()
    summary = pd.read_csv(dft / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "folder"].startswith("001_")
    assert Incar.from_file(dft / summary.loc[0, "folder"] / "3_dielectric" / "INCAR")["LEPSILON"] is True
