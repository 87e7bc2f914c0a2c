"""The sampler: cached = full recompute, symmetry of every sample, round trips, masks, bad input."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from core import wyckoff
from core.errors import InvalidInputError
from core.lattice import symmetrize
from core.logp import logp_fn
from core.sampler import parse_spacegroups, sample, sample_arrays, samples_from_arrays
from core.tokens import CrystalTokens

GROUPS = np.array([225] * 6 + [1, 2, 12, 14, 62, 139, 166, 194, 216, 229])


@pytest.fixture(scope="module")
def drawn(tiny_checkpoint):
    return sample_arrays(tiny_checkpoint, GROUPS, seed=7)


def test_cached_equals_full_recompute(tiny_checkpoint, drawn):
    full = sample_arrays(tiny_checkpoint, GROUPS, seed=7, use_cache=False)
    for key in ("W", "A"):
        np.testing.assert_array_equal(drawn[key], full[key], err_msg=key)
    np.testing.assert_allclose(drawn["XYZ"], full["XYZ"], atol=1e-5)
    np.testing.assert_allclose(drawn["L"], full["L"], atol=1e-4)
    # the perturbed model is not trivial: samples differ across the batch
    assert len({tuple(r) for r in drawn["A"]}) > 5


@pytest.mark.parametrize("spans", [(), (3, 7, 11)])
def test_growing_the_cache_in_phases_changes_nothing(tiny_checkpoint, drawn, spans, monkeypatch):
    """One full-length cache, or short caches grown three times (rows here run to 25 tokens)."""
    from core import sampler

    assert 5 * (drawn["A"] > 0).sum(1).max() > 11
    monkeypatch.setattr(sampler, "DECODE_SPANS", spans)
    sampler._compiled.cache_clear()
    try:
        other = sample_arrays(tiny_checkpoint, GROUPS, seed=7)
    finally:
        sampler._compiled.cache_clear()
    for key in ("W", "A"):
        np.testing.assert_array_equal(other[key], drawn[key], err_msg=key)
    np.testing.assert_allclose(other["XYZ"], drawn["XYZ"], atol=1e-6)
    np.testing.assert_allclose(other["L"], drawn["L"], atol=1e-5)


def test_reported_logp_is_the_models_likelihood(tiny_checkpoint, drawn):
    lp = logp_fn(tiny_checkpoint.config)(tiny_checkpoint.params, *(jnp.asarray(drawn[k]) for k in ("G", "L", "XYZ", "A", "W")))
    for part in ("w", "a", "xyz", "l"):
        np.testing.assert_allclose(drawn[part], np.asarray(getattr(lp, part)), atol=1e-3, err_msg=part)


def test_token_grammar(tiny_checkpoint, drawn):
    t = wyckoff.tables()
    for g, W, A in zip(drawn["G"], drawn["W"], drawn["A"]):
        n = int((W > 0).sum())
        assert (W[:n] > 0).all() and (W[n:] == 0).all(), "padding only at the end"
        assert ((A > 0) == (W > 0)).all(), "an element on every real site, none on padding"
        assert (np.diff(W[:n]) >= 0).all(), "Wyckoff letters in alphabetical order"
        assert (W <= t.wmax[g - 1]).all()
        fixed = t.dof0[g - 1, W[:n]]
        assert len(set(W[:n][fixed])) == fixed.sum(), "a position without free coordinates is used once"
        assert n < tiny_checkpoint.config.n_max


def _fixed_lattice(tokens: CrystalTokens) -> CrystalTokens:
    """Replace a (random-model) lattice by a sane one of the same crystal system."""
    tokens.lattice = symmetrize(tokens.spacegroup, np.array([7.1, 8.3, 9.2, 84.0, 97.0, 101.0]))
    return tokens


def _maps_onto_itself(structure, spacegroup: int, tol: float = 1e-3) -> bool:
    ops = wyckoff.wyckoff_ops(spacegroup)[-1]  # the general position lists every operation of the group
    frac = structure.frac_coords
    species = np.array([str(s) for s in structure.species])
    for op in ops:
        images = frac @ op[:, :3].T + op[:, 3]
        for img, sp in zip(images, species):
            d = img - frac[species == sp]
            if np.abs(d - np.round(d)).max(axis=1).min() > tol:
                return False
    return True


def test_every_sample_has_the_requested_symmetry_and_round_trips(drawn):
    matcher = StructureMatcher()
    for sample in samples_from_arrays(drawn):
        tokens = _fixed_lattice(sample.tokens)
        structure = tokens.to_structure()
        assert _maps_onto_itself(structure, tokens.spacegroup), tokens.to_string()
        assert len(structure) == tokens.num_atoms
        assert matcher.fit(structure, CrystalTokens.from_structure(structure).to_structure())


def test_element_allow_and_deny_lists(tiny_checkpoint):
    allowed = sample(tiny_checkpoint, 225, 12, elements=["Cs", "Li", "F"], seed=1)
    seen = {z for s in allowed for z in s.tokens.species}
    assert seen and seen <= {55, 3, 9}
    denied = sample(tiny_checkpoint, 225, 12, exclude=["Cs", "Li", "F"], seed=1)
    assert not {z for s in denied for z in s.tokens.species} & {55, 3, 9}


def test_seed_reproducible(tiny_checkpoint):
    a = [s.string for s in sample(tiny_checkpoint, [221, 225], 6, seed=3)]
    b = [s.string for s in sample(tiny_checkpoint, [221, 225], 6, seed=3)]
    c = [s.string for s in sample(tiny_checkpoint, [221, 225], 6, seed=4)]
    assert a == b and a != c
    assert [CrystalTokens.from_string(s).spacegroup for s in a] == [221, 225] * 3


def test_low_temperature_picks_the_most_likely_first_letter(tiny_checkpoint):
    from core.model import CrystalFormer

    groups = np.array([225, 221, 62, 14] * 6)
    h0 = CrystalFormer(tiny_checkpoint.config).apply({"params": tiny_checkpoint.params}, jnp.asarray(groups),
                                                      method=CrystalFormer.first_w_logprobs)
    cold = sample_arrays(tiny_checkpoint, groups, temperature=0.02, seed=5)
    np.testing.assert_array_equal(cold["W"][:, 0], np.asarray(h0).argmax(1))
    hot = sample_arrays(tiny_checkpoint, groups, temperature=1.0, seed=5)
    assert (hot["W"][:, 0] != np.asarray(h0).argmax(1)).any()


@pytest.mark.parametrize("kwargs,message", [
    ({"spacegroup": 0}, "1..230"), ({"spacegroup": 231}, "1..230"), ({"spacegroup": "abc"}, "space group"),
    ({"elements": ["Xx"]}, "unknown element"), ({"temperature": 0.0}, "temperature"),
    ({"num": 0}, "at least 1"), ({"spacegroup": "train"}, "training space-group distribution"),
])
def test_bad_requests(tiny_checkpoint, kwargs, message):
    args = {"spacegroup": 225, "num": 2, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        sample(tiny_checkpoint, **args)


def test_parse_spacegroups():
    assert parse_spacegroups("225") == [225]
    assert parse_spacegroups("221, 225") == [221, 225]
    assert parse_spacegroups("1-3,225") == [1, 2, 3, 225]
    with pytest.raises(InvalidInputError):
        parse_spacegroups("0-3")


def test_training_distribution_from_checkpoint_meta(tiny_checkpoint):
    """As stored in meta.json (string keys): only those groups, in proportion."""
    from core.checkpoint import Checkpoint

    ck = Checkpoint(tiny_checkpoint.config, tiny_checkpoint.params, meta={"spacegroup_distribution": {"225": 0.75, "62": 0.25}})
    groups = [s.spacegroup for s in sample(ck, "train", 32, seed=0)]
    assert set(groups) == {225, 62} and 16 <= groups.count(225) <= 30


# ---------------------------------------------------------------- overlap-aware sampling


@pytest.fixture(scope="module")
def overlap_draws(base_checkpoint):
    """24 crystals of the shipped base model (about half overlap as drawn), without and with the option."""
    from core.sampler import resolve_spacegroups

    G = resolve_spacegroups("train", 24, np.random.default_rng(0), base_checkpoint.meta["spacegroup_distribution"])
    plain = sample_arrays(base_checkpoint, G, seed=11)
    checked = sample_arrays(base_checkpoint, G, seed=11, reject_overlaps=True)
    return plain, checked


def test_accepted_samples_keep_every_pair_apart(overlap_draws):
    """Checked independently of core.overlap: pymatgen's neighbour list of the built structure (no orbit
    member merged away) against the rule's pair thresholds."""
    from core.overlap import OverlapRule

    plain, checked = overlap_draws
    assert checked["fits"].mean() >= 0.9
    assert (checked["crystal_draws"] > 1).any(), "some rows needed a new crystal"
    rule = OverlapRule()
    for b in np.flatnonzero(checked["fits"]):
        tokens = CrystalTokens.from_arrays(*(checked[k][b] for k in ("G", "L", "XYZ", "A", "W")))
        structure = tokens.to_structure(merge_tol=0.0)
        assert len(structure) == tokens.num_atoms
        i, j, _, d = structure.get_neighbor_list(3.5)
        z = np.array(structure.atomic_numbers)
        assert (d >= rule.thresholds(z[i], z[j]) - 1e-9).all(), tokens.to_string()
        reported = checked["min_distance"][b]      # exact within 3 Å (the search radius), inf beyond
        if np.isfinite(reported):
            assert reported == pytest.approx(d.min(), abs=1e-6)
        else:
            assert not len(d) or d.min() > 3.0


def test_overlap_aware_logp_is_the_models_likelihood_of_the_returned_tokens(base_checkpoint, overlap_draws):
    _, checked = overlap_draws
    lp = logp_fn(base_checkpoint.config)(base_checkpoint.params, *(jnp.asarray(checked[k]) for k in ("G", "L", "XYZ", "A", "W")))
    for part in ("w", "a", "xyz", "l"):
        np.testing.assert_allclose(checked[part], np.asarray(getattr(lp, part)), atol=2e-3, rtol=1e-5, err_msg=part)


def test_rows_that_fit_as_drawn_are_the_plain_samples(overlap_draws):
    """The option changes only the rows that overlap: the others are today's draws for the same seed."""
    plain, checked = overlap_draws
    first = checked["fits"] & (checked["lattice_draws"] == 1)
    assert 0 < first.sum() < len(first)
    for key in ("W", "A", "XYZ", "L", "w", "a", "xyz", "l"):
        np.testing.assert_array_equal(checked[key][first], plain[key][first], err_msg=key)
    assert not np.array_equal(checked["L"][~first], plain["L"][~first])


def test_crystals_nothing_fits_are_flagged_not_dropped(tiny_checkpoint):
    """The perturbed tiny model never draws a sane cell: every sample comes back, flagged, with its reason."""
    from core.sampler import acceptance

    samples = sample(tiny_checkpoint, [225, 62], 6, seed=2, reject_overlaps=True, lattice_tries=2, crystal_rounds=1)
    assert len(samples) == 6
    assert all(s.fits is False and s.overlap for s in samples)
    assert all(s.draws >= 2 and s.lattice_draws == 2 * s.draws for s in samples)
    assert acceptance(samples) == {"samples": 6, "fit": 0, "flagged": 6, "first_draw": 0}
    assert acceptance(sample(tiny_checkpoint, 225, 2, seed=2)) is None      # option off: nothing checked
    with pytest.raises(InvalidInputError, match="lattice_tries"):
        sample(tiny_checkpoint, 225, 2, reject_overlaps=True, lattice_tries=0)


def test_precompile_covers_every_shape_an_overlap_aware_request_reaches(tiny_checkpoint):
    """After ``precompile`` no draw of that size compiles again, whatever its seed makes it redraw (the
    perturbed tiny model never fits, so every draw goes through redraw rounds and lattice retries)."""
    from core.sampler import LATTICE_TRIES, _compiled, _compiled_lattices, precompile

    config = tiny_checkpoint.config
    precompile(tiny_checkpoint, 40)
    decode, lattices = _compiled(config, True, 1.0), _compiled_lattices(config, 1.0, LATTICE_TRIES - 1)
    compiled = decode._cache_size(), lattices._cache_size()
    for seed in (1, 2):
        sample(tiny_checkpoint, 225, 40, seed=seed, reject_overlaps=True, crystal_rounds=2)
        sample(tiny_checkpoint, [225, 62, 2], 37, seed=seed, reject_overlaps=True, crystal_rounds=1)
    assert (decode._cache_size(), lattices._cache_size()) == compiled
