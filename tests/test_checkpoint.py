"""Checkpoints: official pickles read safely, our format, export, clear errors."""
from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES
from core.checkpoint import (export_official, expected_shapes, load_checkpoint, read_official_pickle,
                             save_checkpoint)
from core.config import ModelConfig
from core.errors import CheckpointError, InvalidInputError, MissingResourceError, NonFiniteWeightsError
from core.logp import logp_fn

TINY = FIXTURES / "tiny"


def _logp(ck, inputs):
    return np.asarray(logp_fn(ck.config)(ck.params, *(jnp.asarray(inputs[k][:8]) for k in ("G", "L", "XYZ", "A", "W"))).total)


def test_official_pickle_with_optimizer_state():
    data = read_official_pickle(TINY / "epoch_000000.pkl")
    assert set(data) == {"params", "opt_state"}
    assert isinstance(data["params"]["~"]["g_embeddings"], np.ndarray)
    # (EmptyState(), ScaleByAdamState(count, mu, nu), ScaleByScheduleState(count), EmptyState()) as plain tuples
    assert isinstance(data["opt_state"], tuple) and len(data["opt_state"]) == 4
    assert int(data["opt_state"][1][0]) == 0


def test_every_parameter_maps(tiny_checkpoint):
    cfg = tiny_checkpoint.config
    n_hk = sum(len(v) for v in read_official_pickle(TINY / "perturbed" / "epoch_000000.pkl")["params"].values())
    assert n_hk == len(expected_shapes(cfg))
    assert json_param_count(cfg) == 17343  # the fixture's param_count


def json_param_count(cfg: ModelConfig) -> int:
    return int(sum(np.prod(s) for s in expected_shapes(cfg).values()))


def test_paper_config_has_the_papers_parameter_count():
    assert json_param_count(ModelConfig()) == 4_833_575  # Table S1


def test_our_format_round_trip(tmp_path, tiny_checkpoint, fixture_inputs):
    save_checkpoint(tmp_path / "ck", tiny_checkpoint.config, tiny_checkpoint.params, {"note": "x"})
    again = load_checkpoint(tmp_path / "ck")
    assert again.config == tiny_checkpoint.config and again.meta["note"] == "x"
    np.testing.assert_array_equal(_logp(again, fixture_inputs), _logp(tiny_checkpoint, fixture_inputs))


def test_export_official_round_trip(tmp_path, tiny_checkpoint, fixture_inputs):
    path = export_official(tmp_path / "out" / "epoch_000001.pkl", tiny_checkpoint.config, tiny_checkpoint.params)
    with open(path, "rb") as fh:  # plain pickle, as the official code reads it
        raw = pickle.load(fh)
    original = read_official_pickle(TINY / "perturbed" / "epoch_000000.pkl")["params"]
    assert raw["params"].keys() == original.keys()
    for module in original:
        for name in original[module]:
            np.testing.assert_array_equal(raw["params"][module][name], original[module][name])
    again = load_checkpoint(tmp_path / "out", tiny_checkpoint.config)  # folder: newest *pkl*
    np.testing.assert_array_equal(_logp(again, fixture_inputs), _logp(tiny_checkpoint, fixture_inputs))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsExec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_RunsCode, _RunsExec])
def test_pickle_that_runs_code_is_refused_before_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = tmp_path / "epoch_000001.pkl"
    with open(evil, "wb") as fh:
        pickle.dump({"params": {"~": {"g_embeddings": payload(marker)}}}, fh, protocol=4)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists(), "the crafted pickle executed code"
    # the plain pickle module *would* run it: the test checks a real threat
    with open(evil, "rb") as fh:
        pickle.load(fh)
    assert marker.exists()


def test_corrupt_pickle(tmp_path):
    src = (TINY / "epoch_000000.pkl").read_bytes()
    bad = tmp_path / "epoch_000000.pkl"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(bad)
    bad.write_bytes(b"this is not a pickle at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


def test_shapes_that_do_not_match_the_config_are_named():
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(TINY / "perturbed" / "epoch_000000.pkl")  # paper config by default
    message = str(err.value)
    assert "a_embeddings: file (119, 8) vs config (119, 32)" in message
    assert "--config" in message


def test_missing_checkpoint_explains_where_to_get_it(tmp_path):
    with pytest.raises(MissingResourceError, match="huggingface.co/zdcao/CrystalFormer"):
        load_checkpoint(tmp_path / "nope")


def test_corrupt_npz(tmp_path, tiny_checkpoint):
    folder = save_checkpoint(tmp_path / "ck", tiny_checkpoint.config, tiny_checkpoint.params)
    (folder / "params.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_with_the_arrays_named(tmp_path, tiny_checkpoint, bad):
    """A params.npz with one non-finite entry (as a diverged run writes) loads today as a model whose
    every log-probability is NaN; it must be refused, naming the array."""
    folder = save_checkpoint(tmp_path / "ck", tiny_checkpoint.config, tiny_checkpoint.params)
    with np.load(folder / "params.npz") as npz:
        flat = {k: np.array(npz[k]) for k in npz.files}
    name = sorted(flat)[0]
    flat[name].flat[0] = bad
    np.savez(folder / "params.npz", **flat)
    with pytest.raises(NonFiniteWeightsError, match=f"1 of {len(flat)} parameter arrays.*{name} \\(1 value"):
        load_checkpoint(folder)
    assert issubclass(NonFiniteWeightsError, CheckpointError)   # the CLI and app report it as one line


def test_saving_non_finite_weights_keeps_the_last_good_file(tmp_path, tiny_checkpoint, fixture_inputs):
    folder = save_checkpoint(tmp_path / "ck", tiny_checkpoint.config, tiny_checkpoint.params)
    before = (folder / "params.npz").read_bytes()
    diverged = jax.tree_util.tree_map(lambda x: x * jnp.nan, tiny_checkpoint.params)
    with pytest.raises(NonFiniteWeightsError, match="to be saved"):
        save_checkpoint(folder, tiny_checkpoint.config, diverged)
    assert (folder / "params.npz").read_bytes() == before
    np.testing.assert_array_equal(_logp(load_checkpoint(folder), fixture_inputs), _logp(tiny_checkpoint, fixture_inputs))


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(h0_size=0, num_layers=2, widening_factor=2),
                                 ModelConfig(num_layers=1, num_heads=3, key_size=6, model_size=10, embed_size=4, Nf=2)])
def test_expected_shapes_are_what_the_model_creates(cfg):
    """The expected shapes (derived from the model) against the architecture written out by hand:
    embeddings, the Wyckoff head, per-layer attention and MLP, the output head."""
    E, D, HK, F = cfg.embed_size, cfg.model_size, cfg.num_heads * cfg.key_size, cfg.widening_factor * cfg.model_size
    shapes = expected_shapes(cfg)
    assert shapes["g_embeddings"] == (230, E) and shapes["a_embeddings"] == (cfg.atom_types, E)
    assert shapes["w_embeddings"] == (cfg.wyck_types, E)
    if cfg.h0_size > 0:
        assert shapes["first_w_hidden/kernel"] == (E, cfg.h0_size) and shapes["first_w_out/bias"] == (cfg.wyck_types,)
    else:
        assert shapes["first_w_table"] == (230, cfg.wyck_types)
    assert shapes["embed_w/kernel"] == (2 * E + 1, D) and shapes["embed_a/kernel"] == (2 * E, D)
    assert all(shapes[f"embed_{t}/kernel"] == (E + 2 * cfg.Nf, D) for t in "xyz")
    for layer in range(cfg.num_layers):
        block = f"block_{layer}"
        assert shapes[f"{block}/attn/query/kernel"] == (D, HK) and shapes[f"{block}/attn/out/kernel"] == (HK, D)
        assert shapes[f"{block}/mlp_in/kernel"] == (D, F) and shapes[f"{block}/mlp_out/bias"] == (D,)
        assert shapes[f"{block}/attn_norm/scale"] == (D,)
    assert f"block_{cfg.num_layers}/attn/query/kernel" not in shapes
    assert shapes["head/kernel"] == (D, cfg.output_size) and shapes["final_norm/bias"] == (D,)
    per_layer = 2 * (2 * D) + 3 * (D * HK + HK) + (HK * D + D) + (D * F + F) + (F * D + D)
    head_w = (E * cfg.h0_size + cfg.h0_size + cfg.h0_size * cfg.wyck_types + cfg.wyck_types if cfg.h0_size > 0
              else 230 * cfg.wyck_types)
    total = ((230 + cfg.wyck_types + cfg.atom_types) * E + head_w + (2 * E + 1) * D + D + 2 * E * D + D
             + 3 * ((E + 2 * cfg.Nf) * D + D) + cfg.num_layers * per_layer + 2 * D + D * cfg.output_size + cfg.output_size)
    assert sum(int(np.prod(s)) for s in shapes.values()) == total


def test_optimizer_state_round_trips_and_refuses_another_setup(tmp_path):
    """Train and PPO resume through the same pair: Adam moments come back exactly; a state with another
    number of leaves (another optimizer or model) is refused, not silently reshaped."""
    import optax

    from core.checkpoint import load_optimizer_state, save_optimizer_state

    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)
    _, state = optimizer.update(jax.tree_util.tree_map(jnp.ones_like, params), state, params)
    save_optimizer_state(tmp_path, state)
    back = load_optimizer_state(tmp_path, optimizer.init(params))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)).init({"w": params["w"]})
    with pytest.raises(InvalidInputError, match="does not match"):
        load_optimizer_state(tmp_path, other)
