"""Load a matgl checkpoint so that it computes the numbers it was published with.

Why this module exists
----------------------
matgl 4.x (4.1.2 is pinned) loads the checkpoints in ``$CFRL_MODELS_DIR/matgl`` without a warning
that matters, but computes different numbers from the ones they were trained and published with.
Rock-salt NaCl, conventional cell, a = 5.69 Å:

===================================  ==================  ===================  ===================
model                                published (old)     matgl 4.1.2 as is    ``load_matgl``
===================================  ==================  ===================  ===================
M3GNet-MP-2021.2.8-PES               −3.3675 eV/atom     −1.2995 eV/atom      −3.3675 eV/atom
MEGNet-MP-2019.4.1-BandGap-mfi PBE   5.031 eV            4.585 eV             5.0313 eV
MEGNet-MP-2018.6.1-Eform             (MP DFT ≈ −2.1)     −1.761 eV/atom       −2.114 eV/atom
===================================  ==================  ===================  ===================

More published numbers reproduced (``tests/test_legacy_matgl.py``, ``tests/test_bandgap.py``): matgl's
example notebooks of 2023 (CsCl, a = 4.1437 Å: MEGNet E_form −2.272 eV/atom, band gaps 4.825 /
8.323 / 6.317 / 5.965 eV at PBE / GLLB-SC / HSE / SCAN; SrTiO3 at a = 4.5 and 3.937988 Å, all four
fidelities, to the printed digits) and the zero-pressure lattice constants of M3GNet-MP-2021.2.8-PES's
model card (NaCl 5.69132, Si 5.45671, SrTiO3 3.94503, MgO 4.26133, Cu 3.61748, Au 4.17198 Å: all
within 1e-3 Å). The CsCl relaxation printed in matgl's 2023 notebook (a = 4.2114 Å, −6.543 eV) was
made with the June-2023 weights of M3GNet-MP (git blob 04f97cc2); loaded through this module those
weights give −6.5431 eV at 4.2114 Å, while the current weights give the model card's 4.20103 Å.
Read as matgl 4.1.2 ships, M3GNet-MP's NaCl energy has no minimum and its MAE against 15 stable MP
compounds is 1.6 eV/atom (0.05 eV/atom with this module).

Root cause: the direction of message aggregation
-------------------------------------------------
A crystal graph holds every bond twice, i → j and j → i. A message computed on bond i → j from
``[v_i, v_j, e_ij]`` (and, in TensorNet, the bond direction) must be summed into one of the two
atoms. The DGL code the checkpoints were trained with did it with ``graph.update_all(...)``, which
sums into the **destination** atom j. Later releases rewrote the layers with ``scatter`` calls that
sum into the **source** atom i, without bumping ``@model_version`` for MEGNet/M3GNet. Because
``v_i ≠ v_j`` and ``e_ij ≠ e_ji`` after the first edge update, every node then receives different
messages than the network was trained on, and the output drifts (for M3GNet-MP the NaCl energy
even keeps falling as the cell expands). Per architecture, read from the released wheels:

* **MEGNet** (``MEGNetGraphConv.node_update_``): DGL ``fn.mean`` of edge features into the
  destination (matgl ≤ 2.2.1) → ``scatter_mean`` into the source (matgl ≥ 3.0.0).
  Affects MEGNet-MP-2018.6.1-Eform and MEGNet-MP-2019.4.1-BandGap-mfi.
* **M3GNet** (``M3GNetGraphConv.node_update_``, M3GNet eq. 5): DGL ``fn.sum`` into the destination
  (matgl ≤ 2.2.1) → ``scatter_add`` into the source (matgl ≥ 3.0.0). Affects M3GNet-MP-2021.2.8-PES
  and M3GNet-MatPES-PBE-v2025.1-PES (trained with the DGL code in 2025-03).
* **TensorNet** (``TensorEmbedding``, the first message-passing step): messages
  ``emb2([x_i, x_j]) · (I, A(r̂_ij), S(r̂_ij))`` summed into the destination (matgl ≤ 2.1.x; the PyG
  port of TensorNet-MatPES-PBE-v2025.1-PES was validated against DGL there) → into the source from
  matgl 2.2.0, which bumped TensorNet's ``__version__`` from 1 to 2. The interaction layers did
  not change. Affects TensorNet-MatPES-PBE-v2025.1-PES (``@model_version`` 1).

How we correct it
-----------------
Without copying matgl code, each affected layer instance is given a subclass of ours that restores
the old direction (``module.__class__ = Legacy…``; no weights change):

* ``LegacyMEGNetGraphConv``: averages edge features into the destination atom (it hands the parent
  method the reversed bond list, whose only use there is the aggregation index).
* ``LegacyM3GNetGraphConv``: computes the eq. 5 message exactly as before and sums it into the
  destination atom.
* ``LegacyTensorEmbedding``: summing the message of bond j → i into i equals summing the message
  of bond i → j into i with the two atom arguments of ``emb2`` swapped and the antisymmetric part
  ``A`` negated (``A`` is odd in the bond direction, ``I`` and ``S`` are even), so it overrides
  ``message`` only.

A second, smaller legacy difference is *not* reproduced: before matgl 4.0.4 the M3GNet three-body
layer indexed parent-graph bonds with positions in the pruned (≤ 4 Å) bond list. matgl 4.x maps them
correctly. Emulating the old indexing changes energies by < 1e-4 eV/atom (max over 80 MP
structures of Li-Co-Ni-O / Na-Fe-P-O with M3GNet-MP, and 2e-6 eV/atom for NaCl with M3GNet-MatPES),
because the three-body update of these models is tiny; keeping the correct indexing keeps the
energy continuous when a bond crosses the three-body cutoff.

Which convention a checkpoint gets (``convention="auto"``)
----------------------------------------------------------
1. ``metadata["matgl_version"]`` in ``model.json`` when present (``save_matgl`` writes it):
   legacy if it is older than 3.0 (MEGNet, M3GNet) or 2.2 (TensorNet).
2. TensorNet: ``@model_version`` 1 → legacy, ≥ 2 → current (matgl bumped it for this change).
3. MEGNet / M3GNet without metadata: a ``Potential`` saved with a ``compile_model`` argument was
   written by matgl ≥ 3.0.5 → current; otherwise legacy, because every MEGNet/M3GNet checkpoint
   matgl published was trained before 3.0. **A model you train with matgl ≥ 3.0 must be saved with
   ``save_matgl`` (or loaded with ``convention="current"``)**, otherwise it is read the old way.
Other architectures (CHGNet, SO3Net, QET) are loaded as they are.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from core.errors import CheckpointError, MissingResourceError
from core.scoring.backends.bond_mlp import bond_mlp, splittable
from core.scoring.device import pick_torch_device
from core.settings import models_dir, require

Convention = Literal["auto", "legacy", "current"]

MATGL_MODELS_URL = "https://github.com/materialsvirtuallab/matgl/tree/main/pretrained_models"
CHECKPOINT_FILES = ("model.json", "model.pt", "state.pt")
# first matgl release that aggregates into the source atom, per architecture (see module docstring)
CURRENT_SINCE: dict[str, tuple[int, int]] = {"MEGNet": (3, 0), "M3GNet": (3, 0), "TensorNet": (2, 2)}

try:  # the layer classes whose aggregation direction changed
    from matgl.layers import M3GNetGraphConv, MEGNetGraphConv, TensorEmbedding
    from matgl.utils.maths import scatter_add
except ImportError as _exc:  # pragma: no cover - matgl is a pinned requirement
    raise ImportError("core.scoring.backends.legacy_matgl needs matgl==4.1.2 (see requirements.txt)") from _exc


class LegacyMEGNetGraphConv(MEGNetGraphConv):
    """MEGNet graph convolution that averages bond features into the destination atom (matgl < 3.0).

    The edge update evaluates its MLP with ``bond_mlp.bond_mlp`` (the same function, fewer
    multiply-adds) when the MLP opens with a Linear layer, as in every MEGNet matgl ships.
    """

    def edge_update_(self, edge_index, edge_feat, node_feat, u_per_edge):  # noqa: D102
        if not splittable(self.edge_func):
            return super().edge_update_(edge_index, edge_feat, node_feat, u_per_edge)
        return bond_mlp(self.edge_func, node_feat, edge_feat, edge_index[0], edge_index[1], u_per_edge)

    def node_update_(self, edge_index, edge_feat, node_feat, u_per_node, num_nodes):  # noqa: D102
        # the parent uses edge_index[0] only, as the index it averages bond features into
        return super().node_update_(edge_index.flip(0), edge_feat, node_feat, u_per_node, num_nodes)


class LegacyM3GNetGraphConv(M3GNetGraphConv):
    """M3GNet graph convolution that sums the node-update messages into the destination atom (matgl < 3.0).

    Both updates evaluate their gated MLP with ``bond_mlp.bond_mlp`` (the same function with 40 %
    fewer multiply-adds) when its branches open with a Linear layer, as in every M3GNet matgl ships.
    """

    def _bond_mlp(self, mlp, edge_index, edge_feat, node_feat, u_per_edge):
        src, dst = edge_index[0], edge_index[1]
        extra = u_per_edge if self.include_state else None
        if splittable(mlp):
            return bond_mlp(mlp, node_feat, edge_feat, src, dst, extra)
        parts = [node_feat[src], node_feat[dst], edge_feat, *([] if extra is None else [extra])]
        return mlp(torch.hstack(parts))

    def edge_update_(self, edge_index, edge_feat, node_feat, rbf, u_per_edge):  # noqa: D102
        message = self._bond_mlp(self.edge_update_func, edge_index, edge_feat, node_feat, u_per_edge)
        return message * self.edge_weight_func(rbf)  # M3GNet eq. 4

    def node_update_(self, edge_index, edge_feat, node_feat, rbf, u_per_edge, num_nodes):  # noqa: D102
        message = self._bond_mlp(self.node_update_func, edge_index, edge_feat, node_feat, u_per_edge)
        message = message * self.node_weight_func(rbf)  # M3GNet eq. 5
        return scatter_add(message, edge_index[1], dim_size=num_nodes, dim=0)


class LegacyTensorEmbedding(TensorEmbedding):
    """TensorNet embedding whose messages reach each atom as in matgl < 2.2 (summed over incoming bonds).

    The parent sums the message of bond i → j into atom i; the old code summed the message of the
    reverse bond j → i into i, i.e. ``emb2([x_j, x_i])`` with the bond direction reversed, which
    flips the sign of the antisymmetric part ``A`` only.
    """

    def message(self, x_i, x_j, edge_attr, edge_weight, Iij, Aij, Sij):  # noqa: D102,N803
        return super().message(x_j, x_i, edge_attr, edge_weight, Iij, -Aij, Sij)


LEGACY_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    MEGNetGraphConv: LegacyMEGNetGraphConv,
    M3GNetGraphConv: LegacyM3GNetGraphConv,
    TensorEmbedding: LegacyTensorEmbedding,
}


def use_legacy_message_passing(model: nn.Module) -> int:
    """Give every affected layer of ``model`` its legacy subclass, in place. Returns how many changed.

    Raises:
        CheckpointError: the model holds an architecture we correct (e.g. TensorNet) through a layer
            class we do not know, such as the warp kernels of ``nvalchemi-toolkit-ops``.
    """
    changed = 0
    for module in model.modules():
        legacy = LEGACY_LAYERS.get(type(module))
        if legacy is not None:
            module.__class__ = legacy
            changed += 1
    arch = _architecture_of_module(model)
    if arch is not None and changed == 0:
        raise CheckpointError(f"cannot apply the matgl < 3.0 message direction to this {arch}: "
                              "none of its layers is a plain matgl PyG layer")
    return changed


def resolve_matgl_path(path_or_name: str | Path) -> Path:
    """Folder of a matgl checkpoint: an existing path, or a name under ``models_dir()/"matgl"``.

    Raises:
        MissingResourceError: naming the folder or file that is absent and where to get it.
    """
    given = Path(path_or_name).expanduser()
    folder = given if given.is_dir() or given.is_absolute() or len(given.parts) > 1 else models_dir() / "matgl" / given
    how = (f"Download the folder '{folder.name}' (model.json, model.pt, state.pt) from {MATGL_MODELS_URL} "
           f"into {models_dir() / 'matgl'}, or set CFRL_MODELS_DIR to the folder that holds matgl/{folder.name}.")
    require(folder, f"matgl model {folder.name}", how)
    for name in CHECKPOINT_FILES:
        require(folder / name, f"{name} of matgl model {folder.name}", how)
    return folder


def read_model_json(folder: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a checkpoint folder (raises CheckpointError when unreadable)."""
    try:
        return json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'model.json'} is not a readable matgl model.json: {exc}") from exc


def detect_convention(info: dict[str, Any]) -> Literal["legacy", "current"]:
    """Which aggregation direction a checkpoint was trained with, from its ``model.json`` (rules in the module docstring)."""
    arch, node = _architecture_of_json(info)
    if arch is None:
        return "current"
    saved_with = (info.get("metadata") or {}).get("matgl_version")
    if saved_with:
        return "legacy" if _version_tuple(saved_with) < CURRENT_SINCE[arch] else "current"
    if arch == "TensorNet":
        return "legacy" if int(node.get("@model_version", 0)) < 2 else "current"
    if "compile_model" in (info.get("kwargs") or {}):
        return "current"
    return "legacy"


def load_matgl(path_or_name: str | Path, device: str | None = None, convention: Convention = "auto") -> nn.Module:
    """Load a matgl checkpoint folder (``Potential`` or property model) computing its published numbers.

    Args:
        path_or_name: a checkpoint folder, or a name such as ``"M3GNet-MP-2021.2.8-PES"`` resolved
            under ``core.settings.models_dir()/"matgl"`` (never a hub download).
        device: torch device; default ``pick_torch_device()``.
        convention: ``"auto"`` (detect, see module docstring), ``"legacy"`` (matgl < 3.0 message
            direction) or ``"current"`` (as matgl 4.x computes).

    Returns:
        the model in eval mode on ``device``, with ``matgl_convention`` and ``matgl_path`` attributes.

    Raises:
        MissingResourceError: the folder or one of its three files is absent.
        CheckpointError: the files exist but matgl cannot build the model from them.
    """
    import matgl
    import matgl.data.transformer

    folder = resolve_matgl_path(path_or_name)
    info = read_model_json(folder)
    chosen = detect_convention(info) if convention == "auto" else convention
    if chosen not in ("legacy", "current"):
        raise ValueError(f"convention must be 'auto', 'legacy' or 'current', not {convention!r}")
    torch.serialization.add_safe_globals([matgl.data.transformer.Normalizer])
    try:
        with _plain_pyg_layers(chosen == "legacy"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Incompatible model version")
            model = matgl.load_model(folder)
    except (MissingResourceError, CheckpointError):
        raise
    except Exception as exc:  # matgl wraps everything in ValueError/RuntimeError
        cause = exc.__cause__ or exc
        raise CheckpointError(f"matgl cannot load {folder}: {type(cause).__name__}: {cause}") from exc
    if chosen == "legacy":
        use_legacy_message_passing(model)
    model.matgl_convention = chosen
    model.matgl_path = str(folder)
    return model.to(pick_torch_device(device)).eval()


def save_matgl(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save a matgl model with ``metadata["matgl_version"]`` so ``load_matgl`` reads it the right way."""
    import matgl

    stamped = {**(metadata or {}), "matgl_version": matgl.__version__}
    model.save(str(path), metadata=stamped)
    return Path(path)


@contextlib.contextmanager
def _plain_pyg_layers(active: bool) -> Iterator[None]:
    """While loading a legacy checkpoint, build TensorNet with matgl's PyG layers, not warp kernels."""
    if not active:
        yield
        return
    import matgl.models._tensornet as tensornet_module

    saved = tensornet_module._warp_available
    tensornet_module._warp_available = False
    try:
        yield
    finally:
        tensornet_module._warp_available = saved


def _architecture_of_json(node: Any) -> tuple[str | None, dict[str, Any]]:
    """First MEGNet / M3GNet / TensorNet ``{"@class": ...}`` block nested in a model.json."""
    if isinstance(node, dict):
        if node.get("@class") in CURRENT_SINCE:
            return node["@class"], node
        for value in node.values():
            found = _architecture_of_json(value)
            if found[0] is not None:
                return found
    return None, {}


def _architecture_of_module(model: nn.Module) -> str | None:
    for module in model.modules():
        if type(module).__name__ in CURRENT_SINCE:
            return type(module).__name__
    return None


def _version_tuple(text: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in str(text).split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]
