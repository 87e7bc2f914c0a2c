"""Equivalent Wyckoff descriptions of a crystal (training-data augmentation) and the NLL summed over them."""
from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from core.config import ModelConfig
from core.data import ARRAY_KEYS, split, tokenize
from core.logp import batched_logp
from core.model import init_params
from core.tokens import CrystalTokens
from core.train import TrainConfig, crystal_nll, evaluate, train

SMALL = ModelConfig(num_layers=1, num_heads=2, key_size=4, model_size=8, embed_size=4, h0_size=8, Kx=2, Kl=1,
                    dropout_rate=0.0, attn_dropout=0.0)


def rock_salt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rutile() -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


def wurtzite() -> Structure:
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


def test_rock_salt_has_its_two_origin_choices():
    """Fm-3m NaCl: Na on 4a and Cl on 4b, or (origin shifted by ½,½,½) Na on 4b and Cl on 4a."""
    descriptions = CrystalTokens.equivalents(rock_salt())
    assert descriptions[0].to_string() == CrystalTokens.from_structure(rock_salt()).to_string()
    sites = {tuple((CrystalTokens.to_string(t).split("-")[i]) for i in (1, 2, 6, 7)) for t in descriptions}
    assert sites == {("a", "Na", "b", "Cl"), ("a", "Cl", "b", "Na")}


@pytest.mark.parametrize("make", [rock_salt, rutile, wurtzite])
def test_every_description_rebuilds_the_same_crystal(make):
    structure = make()
    descriptions = CrystalTokens.equivalents(structure, limit=16)
    assert len({t.key() for t in descriptions}) == len(descriptions)
    matcher = StructureMatcher()
    for tokens in descriptions:
        assert tokens.spacegroup == descriptions[0].spacegroup
        assert matcher.fit(structure, tokens.to_structure()), tokens.to_string(3)
    # wurtzite's free z: the normalizer's origin shift along c gives at least one more description
    if make is wurtzite:
        assert len(descriptions) >= 2


def test_limit_keeps_the_canonical_description_first():
    descriptions = CrystalTokens.equivalents(rutile(), limit=1)
    assert len(descriptions) == 1
    assert descriptions[0].to_string() == CrystalTokens.from_structure(rutile()).to_string()


def test_tokenize_with_equivalents_keeps_the_canonical_rows_and_split():
    structures = [rock_salt(), rutile(), wurtzite(), rock_salt().copy()]
    structures[3].replace_species({"Na": "K"})
    plain = tokenize(structures, workers=1)
    augmented = tokenize(structures, workers=1, equivalents=4)
    assert len(augmented) > len(plain)
    assert sorted(set(augmented.crystals.tolist())) == [0, 1, 2, 3]
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(augmented.canonical().arrays[key], plain.arrays[key])
    a_train, a_val = split(augmented, 0.5, seed=1)
    p_train, p_val = split(plain, 0.5, seed=1)
    np.testing.assert_array_equal(a_val.canonical().arrays["A"], p_val.arrays["A"])
    np.testing.assert_array_equal(a_train.canonical().arrays["A"], p_train.arrays["A"])
    assert not set(a_train.crystals.tolist()) & set(a_val.crystals.tolist())
    picked = augmented.one_per_crystal(np.random.default_rng(0))
    assert len(picked) == 4 and "crystal" not in picked.arrays


def test_crystal_nll_sums_probability_over_descriptions():
    augmented = tokenize([rock_salt(), rutile()], workers=1, equivalents=4)
    params = init_params(SMALL, 0)
    lp = batched_logp(SMALL, params, *(augmented.arrays[k] for k in ARRAY_KEYS)).total
    expected = -np.mean([np.log(np.sum(np.exp(lp[augmented.crystals == c].astype(np.float64)))) for c in (0, 1)])
    assert crystal_nll(SMALL, params, augmented) == pytest.approx(expected, abs=1e-4)
    # summing over more than one description can only make the crystal more likely than its canonical row
    assert crystal_nll(SMALL, params, augmented) < evaluate(SMALL, params, augmented.canonical())["total"]
    plain = augmented.canonical()
    assert crystal_nll(SMALL, params, plain) == pytest.approx(evaluate(SMALL, params, plain)["total"], abs=1e-3)


def test_augmented_training_logs_and_selects_by_the_crystal_nll(tmp_path):
    structures = [rock_salt(), rutile(), wurtzite()]
    for element in ("K", "Rb", "Li"):
        s = rock_salt()
        s.replace_species({"Na": element})
        structures.append(s)
    augmented = tokenize(structures, workers=1, equivalents=4)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, warmup_steps=2, seed=0)
    ck = train(SMALL, cfg, augmented, augmented, tmp_path / "run", log=lambda m: None)
    rows = [line.split(",") for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("val_crystal")
    best = min(float(r[col]) for r in rows[1:])
    assert ck.meta["val_nll"]["crystal"] == pytest.approx(best, abs=1e-3)
    assert float(rows[1][col]) < float(rows[1][rows[0].index("val_loss")])
