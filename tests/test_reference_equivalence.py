"""Our Flax CrystalFormer against the reference implementation's stored outputs.

For every config and parameter set in ../shared/fixtures/crystalformer (the ``perturbed`` sets are the
strict test: with O(1) weights a wrong mask or position encoding moves log-likelihoods by nats):
log-likelihood parts, the training loss, raw network outputs, gradients and the PPO loss.
Tolerances are the fixture README's suggestions for a float32 re-implementation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES, fixture_param_sets
from core.checkpoint import load_checkpoint
from core.config import ModelConfig
from core.logp import forward, log_prob, loss_fn
from core.ppo import ppo_loss

PARAM_SETS = fixture_param_sets()
KEYS = ("G", "L", "XYZ", "A", "W")


@pytest.fixture(scope="module", params=PARAM_SETS, ids=[p[0] for p in PARAM_SETS])
def case(request, fixture_inputs):
    """Everything we compare, computed once per parameter set with two compiled functions."""
    _, config_json, folder = request.param
    config = ModelConfig.from_json(config_json)
    ck = load_checkpoint(folder, config)
    with np.load(folder / "expected.npz") as z:
        exp = {k: z[k] for k in z.files}
    batch = _batch(fixture_inputs)
    raw_idx = np.concatenate([np.arange(len(exp["raw_h"])), exp["raw_extra_idx"]])
    as_f32 = lambda k: jnp.asarray(exp[k], jnp.float32)
    ppo_idx = exp["ppo_idx"]

    @jax.jit
    def everything(params):
        (loss, parts), grads = jax.value_and_grad(lambda p: loss_fn(config, p, batch), has_aux=True)(params)
        lp = log_prob(config, params, *batch)
        G, _, XYZ, A, W = (x[raw_idx] for x in batch)
        raw = forward(config, params, G, XYZ, A, W)
        ppo_batch = tuple(x[ppo_idx] for x in batch)
        (ppo, kl), ppo_grads = jax.value_and_grad(
            lambda p: ppo_loss(config, p, ppo_batch, as_f32("ppo_old_logp"), as_f32("ppo_pretrain_logp"),
                               as_f32("ppo_advantages"), float(exp["ppo_eps_clip"]), float(exp["ppo_beta"])),
            has_aux=True)(params)
        return dict(lp=lp, loss=loss, parts=parts, grads=grads, raw=raw, ppo=ppo, kl=kl, ppo_grads=ppo_grads)

    got = jax.tree_util.tree_map(np.asarray, everything(ck.params))
    return config, got, exp


def _batch(inputs, idx=slice(None)):
    return tuple(jnp.asarray(inputs[k][idx]) for k in KEYS)


def test_fixtures_present():
    assert PARAM_SETS, f"no reference fixtures found under {FIXTURES}"
    assert any("perturbed" in p[0] for p in PARAM_SETS)


def test_log_likelihood_parts(case):
    config, got, exp = case
    for part in ("w", "a", "xyz", "l"):
        np.testing.assert_allclose(getattr(got["lp"], part), exp[f"logp_{part}"], atol=1e-4, err_msg=part)
    np.testing.assert_allclose(got["lp"].total, exp["logp"], atol=1e-4)
    # the crystals are far apart in likelihood: a trivial model could not pass the check above by luck
    assert np.ptp(exp["logp"]) > 10


def test_loss_and_parts(case):
    config, got, exp = case
    np.testing.assert_allclose(float(got["loss"]), exp["loss"], atol=1e-4)
    for part in ("w", "a", "xyz", "l"):
        np.testing.assert_allclose(float(got["parts"][part]), exp[f"loss_{part}"], atol=1e-4, err_msg=part)


def test_raw_outputs(case):
    config, got, exp = case
    ref = np.concatenate([exp["raw_h"], exp["raw_h_extra"]])
    finite = np.abs(ref) < 1e9
    np.testing.assert_array_equal(np.abs(got["raw"]) < 1e9, finite)  # the same entries are masked
    np.testing.assert_allclose(got["raw"][finite], ref[finite], atol=2e-5)


def test_gradients(case):
    config, got, exp = case
    np.testing.assert_allclose(_norm(got["grads"]), exp["grad_global_norm"], rtol=1e-4)
    per_leaf = {k[len("grad/"):]: v for k, v in exp.items() if k.startswith("grad/") and not k.endswith(("_f32", "_mixed"))}
    if per_leaf:  # tiny only: every leaf, mapped from haiku names
        from core.checkpoint import to_haiku

        ours = to_haiku(got["grads"], config)
        for name, ref in per_leaf.items():
            module, param = name.rsplit("/", 1)
            np.testing.assert_allclose(ours[module][param], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max() + 1e-12, err_msg=name)


def test_ppo_loss(case):
    config, got, exp = case
    np.testing.assert_allclose(float(got["ppo"]), exp["ppo_loss"], atol=1e-5)
    np.testing.assert_allclose(float(got["kl"]), exp["ppo_kl_mean"], atol=1e-5)
    np.testing.assert_allclose(_norm(got["ppo_grads"]), exp["ppo_grad_global_norm"], rtol=1e-4)


def test_kl_term_vanishes_when_policy_is_base(tiny_checkpoint, fixture_inputs):
    config, params = tiny_checkpoint.config, tiny_checkpoint.params
    batch = _batch(fixture_inputs, slice(0, 8))
    logp = log_prob(config, params, *batch).total
    adv = jnp.linspace(-1.0, 1.0, 8)
    with_kl = ppo_loss(config, params, batch, logp, logp, adv, 0.2, tau=5.0)
    without = ppo_loss(config, params, batch, logp, logp, adv, 0.2, tau=0.0)
    assert abs(float(with_kl[1])) < 1e-5
    np.testing.assert_allclose(float(with_kl[0]), float(without[0]), atol=1e-5)
    # ...and does not vanish when the base differs
    shifted = ppo_loss(config, params, batch, logp, logp - 1.0, adv, 0.2, tau=5.0)
    np.testing.assert_allclose(float(shifted[1]), 1.0, atol=1e-5)


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree_util.tree_leaves(tree))))
