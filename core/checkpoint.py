"""Loading and saving CrystalFormer checkpoints.

Two formats:

* **Ours** (safe, what the project ships): a folder with ``config.json`` (ModelConfig),
  ``params.npz`` (arrays named ``module/sub/param``), optional ``meta.json`` (provenance, metrics)
  and ``MODEL_CARD.md``. ``params.npz`` is read with ``allow_pickle=False``.
* **Official** (github.com/deepmodeling/CrystalFormer): ``epoch_%06d.pkl``, a pickled dict whose
  ``"params"`` is a haiku parameter dict (``{module_path: {name: array}}``), optionally with the optax
  ``opt_state``. Such files are read with an allow-list unpickler that can only rebuild numpy arrays
  and three plain optax state tuples: a pickle that asks for anything else (``os.system``,
  ``builtins.exec`` …) is refused before anything runs. Official files store no hyperparameters:
  pass the config they were trained with (default: the paper's, which the published alex20 base,
  RL-ehull and RL-dielectric checkpoints use).
"""
from __future__ import annotations

import functools
import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from core.config import ModelConfig
from core.errors import CheckpointError, InvalidInputError, MissingResourceError, NonFiniteWeightsError
from core.model import init_params

OFFICIAL_HOW_TO = (
    "Official CrystalFormer checkpoints (alex20 base, RL-ehull, RL-dielectric) are on the Hugging Face hub "
    "at huggingface.co/zdcao/CrystalFormer (alex20/PBE/epoch_005500.pkl, alex20/RL-ehull/epoch_000195.pkl, "
    "alex20/RL-dielectric/epoch_000100.pkl); put the .pkl in a folder under checkpoints/."
)


# ---------------------------------------------------------------------------------------------
# The model as loaded
# ---------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A CrystalFormer ready to use: hyperparameters, Flax params, and where they came from."""

    config: ModelConfig
    params: Any
    source: str = ""
    fmt: str = "ours"                     # "ours" | "official" | "fresh"
    meta: dict = field(default_factory=dict)
    opt_state: Any = None                 # optimizer moments when the file carries them

    @property
    def name(self) -> str:
        return self.meta.get("name") or Path(self.source).stem or "model"


# ---------------------------------------------------------------------------------------------
# Safe unpickling of official checkpoints
# ---------------------------------------------------------------------------------------------
def _rebuild_jax_array(fun, args, arr_state, _aval_state):
    """What jax's ``_reconstruct_array`` does, minus jax: a plain numpy array."""
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return arr


class _PlainTuple(tuple):
    """Stands in for optax's NamedTuple states: unpickles into a plain tuple."""

    def __new__(cls, *args):
        return tuple(args)


class _AllowListUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("jax._src.array", "_reconstruct_array"): _rebuild_jax_array,
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("optax._src.base", "EmptyState"): _PlainTuple,
        ("optax._src.transform", "ScaleByAdamState"): _PlainTuple,
        ("optax._src.transform", "ScaleByScheduleState"): _PlainTuple,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to load: the pickle asks for {module}.{name}, which is not a parameter array. "
                "A CrystalFormer checkpoint only contains arrays; this file may be unsafe.") from None


def read_official_pickle(path: str | Path) -> dict:
    """Read an official ``.pkl`` checkpoint safely. Returns the dict (``params`` as numpy arrays)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _AllowListUnpickler(fh).load()
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise MissingResourceError(f"checkpoint {path} not found. {OFFICIAL_HOW_TO}") from None
    except Exception as exc:  # truncated / not a pickle / wrong protocol
        raise CheckpointError(f"{path} is not a readable CrystalFormer checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise CheckpointError(f"{path} holds no 'params' dict; not a CrystalFormer checkpoint")
    return data


# ---------------------------------------------------------------------------------------------
# haiku names <-> our Flax names
# ---------------------------------------------------------------------------------------------
def _hk(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def haiku_name_map(config: ModelConfig) -> dict[tuple[str, str], tuple[str, ...]]:
    """(haiku module, haiku param) -> path in our Flax params, for every parameter."""
    m: dict[tuple[str, str], tuple[str, ...]] = {
        ("~", "g_embeddings"): ("g_embeddings",),
        ("~", "w_embeddings"): ("w_embeddings",),
        ("~", "a_embeddings"): ("a_embeddings",),
    }

    def linear(index: int, *path: str) -> None:
        m[(_hk("linear", index), "w")] = (*path, "kernel")
        m[(_hk("linear", index), "b")] = (*path, "bias")

    def norm(index: int, *path: str) -> None:
        m[(_hk("layer_norm", index), "scale")] = (*path, "scale")
        m[(_hk("layer_norm", index), "offset")] = (*path, "bias")

    if config.h0_size > 0:
        linear(0, "first_w_hidden")
        linear(1, "first_w_out")
        offset = 2
    else:
        m[("~", "w_params")] = ("first_w_table",)
        offset = 0
    for i, token in enumerate("waxyz"):
        linear(offset + i, f"embed_{token}")
    for layer in range(config.num_layers):
        block = f"block_{layer}"
        norm(2 * layer, block, "attn_norm")
        norm(2 * layer + 1, block, "mlp_norm")
        mha = _hk("multi_head_attention", layer)
        for hk_name, ours in (("query", "query"), ("key", "key"), ("value", "value"), ("linear", "out")):
            m[(f"{mha}/{hk_name}", "w")] = (block, "attn", ours, "kernel")
            m[(f"{mha}/{hk_name}", "b")] = (block, "attn", ours, "bias")
        linear(offset + 5 + 2 * layer, block, "mlp_in")
        linear(offset + 6 + 2 * layer, block, "mlp_out")
    norm(2 * config.num_layers, "final_norm")
    linear(offset + 5 + 2 * config.num_layers, "head")
    return m


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


@functools.lru_cache(maxsize=16)
def _shapes_of(config: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    created = jax.eval_shape(lambda: init_params(config))   # shapes only: no parameter is computed
    return tuple(("/".join(str(k.key) for k in path), tuple(int(n) for n in leaf.shape))
                 for path, leaf in jax.tree_util.tree_flatten_with_path(created)[0])


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """'/'-joined parameter path -> shape for ``config``, derived from the model itself
    (``jax.eval_shape`` of ``core.model.init_params``), so it cannot drift from what the model creates."""
    return dict(_shapes_of(config))


def _check_shapes(flat: dict[str, np.ndarray], config: ModelConfig, source: str, hint: str) -> None:
    want = expected_shapes(config)
    missing = sorted(set(want) - set(flat))
    extra = sorted(set(flat) - set(want))
    wrong = [f"{k}: file {tuple(flat[k].shape)} vs config {want[k]}" for k in sorted(set(want) & set(flat))
             if tuple(flat[k].shape) != want[k]]
    if missing or extra or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} parameter shape(s) differ: " + "; ".join(wrong[:6]) + (" …" if len(wrong) > 6 else ""))
        if missing:
            parts.append("missing: " + ", ".join(missing[:6]) + (" …" if len(missing) > 6 else ""))
        if extra:
            parts.append("unexpected: " + ", ".join(extra[:6]) + (" …" if len(extra) > 6 else ""))
        raise CheckpointError(f"{source} does not match its model config ({'; '.join(parts)}). {hint}")


def _check_finite(flat: dict[str, np.ndarray], source: str) -> None:
    """Refuse parameters with NaN or ±inf entries, naming the arrays (a diverged run writes them)."""
    bad = [(k, int(np.size(v) - np.count_nonzero(np.isfinite(v)))) for k, v in flat.items()
           if np.issubdtype(np.asarray(v).dtype, np.inexact) and not np.all(np.isfinite(v))]
    if bad:
        named = "; ".join(f"{k} ({n} value(s))" for k, n in bad[:4]) + (" …" if len(bad) > 4 else "")
        raise NonFiniteWeightsError(
            f"{source}: {len(bad)} of {len(flat)} parameter arrays hold NaN or infinite values: {named}. "
            "The file is damaged or was written by a training run that diverged; use an earlier "
            "checkpoint or retrain (a lower learning rate usually helps).")


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        _set(tree, tuple(key.split("/")), jnp.asarray(value))
    return tree


def flatten_params(params) -> dict[str, np.ndarray]:
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def from_haiku(hk_params: dict, config: ModelConfig, source: str = "checkpoint") -> dict:
    """Map a haiku parameter dict onto our Flax params (shapes checked against ``config``)."""
    flat: dict[str, np.ndarray] = {}
    unknown = []
    mapping = haiku_name_map(config)
    for module, leaves in hk_params.items():
        if not isinstance(leaves, dict):
            raise CheckpointError(f"{source}: params[{module!r}] is not a dict of arrays")
        for name, value in leaves.items():
            path = mapping.get((module, name))
            if path is None:
                unknown.append(f"{module}/{name}")
                continue
            flat["/".join(path)] = np.asarray(value)
    hint = ("Pass the hyperparameters it was trained with (--config CONFIG.json / config=...); "
            "the default is the paper's (Table S1).")
    if unknown:
        raise CheckpointError(f"{source} has parameters this config does not define: {', '.join(unknown[:6])}. {hint}")
    _check_shapes(flat, config, source, hint)
    _check_finite(flat, source)
    return _unflatten(flat)


def to_haiku(params, config: ModelConfig) -> dict:
    """Our Flax params -> a haiku parameter dict (numpy float32) for the official code."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for (module, name), path in haiku_name_map(config).items():
        out.setdefault(module, {})[name] = np.asarray(_get(params, path), dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _find_official_file(folder: Path) -> Path | None:
    """The reference's rule: the newest file in the folder whose name contains 'pkl'."""
    files = sorted((p for p in folder.iterdir() if "pkl" in p.name and p.is_file()), key=lambda p: p.name)
    return files[-1] if files else None


def load_checkpoint(path: str | Path, config: ModelConfig | str | Path | None = None) -> Checkpoint:
    """Load ours (folder with config.json + params.npz) or an official ``.pkl`` (file or folder).

    Args:
        path: checkpoint folder or file.
        config: hyperparameters for official files (ModelConfig or JSON path); ignored for ours unless
            given explicitly, in which case it must match the stored config's shapes.
    """
    path = Path(path)
    if isinstance(config, (str, Path)):
        config = ModelConfig.from_json(config)
    if not path.exists():
        raise MissingResourceError(
            f"checkpoint {path} not found. Shipped checkpoints live in checkpoints/ (base, rl-ehull, rl-fom); "
            f"{OFFICIAL_HOW_TO}")
    if path.is_dir() and (path / "params.npz").exists():
        return _load_ours(path, config)
    if path.is_dir():
        found = _find_official_file(path)
        if found is None:
            raise MissingResourceError(f"{path} holds neither params.npz (our format) nor a .pkl (official format). {OFFICIAL_HOW_TO}")
        path = found
    if path.suffix == ".npz":
        return _load_ours(path.parent, config)
    data = read_official_pickle(path)
    cfg = config or ModelConfig()
    params = from_haiku(data["params"], cfg, source=str(path))
    return Checkpoint(cfg, params, source=str(path), fmt="official",
                      meta={"name": path.parent.name + "/" + path.stem}, opt_state=data.get("opt_state"))


def _load_ours(folder: Path, config: ModelConfig | None) -> Checkpoint:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{folder} has params.npz but no config.json")
    stored = ModelConfig.from_json(config_path)
    cfg = config or stored
    try:
        with np.load(folder / "params.npz", allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{folder / 'params.npz'} is corrupt or not an npz archive ({exc})") from None
    _check_shapes(flat, cfg, str(folder / "params.npz"), "The file and config.json disagree; was it written by another version?")
    _check_finite(flat, str(folder / "params.npz"))
    meta = {}
    if (folder / "meta.json").exists():
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except ValueError:
            meta = {}
    meta.setdefault("name", folder.name)
    return Checkpoint(cfg, _unflatten(flat), source=str(folder), fmt="ours", meta=meta)


def save_checkpoint(folder: str | Path, config: ModelConfig, params, meta: dict | None = None) -> Path:
    """Write our safe format: config.json, params.npz, meta.json. Returns the folder."""
    folder = Path(folder)
    flat = flatten_params(params)
    _check_finite(flat, f"parameters to be saved in {folder}")   # before writing: keep the last good file
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json(folder / "config.json")
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    tmp = folder / "params.npz.tmp"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(folder / "params.npz")  # atomic: a crash never leaves half a file
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return folder


def export_official(path: str | Path, config: ModelConfig, params) -> Path:
    """Write ``params`` as the official CrystalFormer pickle (``{"params": haiku dict}``, protocol 4)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"params": to_haiku(params, config)}, fh, protocol=4)
    return path


def fresh_checkpoint(config: ModelConfig, seed: int = 42) -> Checkpoint:
    if not isinstance(config, ModelConfig):
        raise InvalidInputError("config must be a ModelConfig")
    return Checkpoint(config, init_params(config, seed), source="", fmt="fresh", meta={"name": "untrained"})


OPT_STATE_FILE = "opt_state.npz"


def save_optimizer_state(folder: str | Path, opt_state: Any) -> None:
    """The optimizer state's leaves (optax's pytree, e.g. Adam moments) as ``opt_state.npz`` in ``folder``."""
    np.savez(Path(folder) / OPT_STATE_FILE, *[np.asarray(x) for x in jax.tree_util.tree_leaves(opt_state)])


def load_optimizer_state(folder: str | Path, like: Any) -> Any:
    """The optimizer state saved in ``folder``, in the structure of ``like`` (a fresh ``optimizer.init``).

    Raises:
        InvalidInputError: the saved state has a different number of leaves (another optimizer or model
            size): resuming it would silently scramble the moments.
    """
    path = Path(folder) / OPT_STATE_FILE
    with np.load(path) as z:
        leaves = [jnp.asarray(z[f"arr_{i}"]) for i in range(len(z.files))]
    treedef = jax.tree_util.tree_structure(like)
    if treedef.num_leaves != len(leaves):
        raise InvalidInputError(f"{folder}: optimizer state does not match this training setup "
                                f"({len(leaves)} saved leaves, {treedef.num_leaves} expected); start a new --out")
    return jax.tree_util.tree_unflatten(treedef, leaves)
