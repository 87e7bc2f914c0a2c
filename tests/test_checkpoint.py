"""Checkpoints: official pickles read safely, our format, export, clear errors."""
from __future__ import annotations

import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES
from core.checkpoint import (export_official, expected_shapes, load_checkpoint, read_official_pickle,
                             save_checkpoint)
from core.config import ModelConfig
from core.errors import CheckpointError, MissingResourceError
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


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(h0_size=0, num_layers=2, widening_factor=2),
                                 ModelConfig(num_layers=1, num_heads=3, key_size=6, model_size=10, embed_size=4, Nf=2)])
def test_expected_shapes_are_what_the_model_creates(cfg):
    import jax

    from core.model import init_params

    created = jax.eval_shape(lambda: init_params(cfg))
    flat = {"/".join(str(k.key) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(created)[0]}
    assert flat == expected_shapes(cfg)
