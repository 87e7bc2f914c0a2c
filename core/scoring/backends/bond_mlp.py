"""An MLP over the bonds of a crystal graph, without stacking its input per bond.

The edge updates of M3GNet and MEGNet (and M3GNet's node update) apply an MLP to
``[v_i, v_j, e_ij(, u)]`` for every bond i → j: 192 numbers per bond for M3GNet-MP, of which 128 are
copies of the two atoms' features. The first layer is linear, so it can be split by input block:
``W [v_i; v_j; e_ij] = (W_i v)_i + (W_j v)_j + W_e e_ij``. The two atom blocks are computed once
per atom and gathered to the bonds, and a bond costs a 64 × 64 product instead of 192 × 64: 40 %
fewer multiply-adds for M3GNet's gated MLP, 30 % for MEGNet's edge MLP. The result is the same up
to float32 rounding (the sums run in another order).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional


def _first_layers(mlp: nn.Module) -> list[nn.Module]:
    """The layers that see the stacked input: one for an MLP, two (value and gate) for a gated MLP."""
    layers, gates = getattr(mlp, "layers", None), getattr(mlp, "gates", None)
    heads = [layers, gates] if gates is not None else [layers]
    return [head[0] for head in heads if isinstance(head, (nn.Sequential, nn.ModuleList)) and len(head)]


def splittable(mlp: nn.Module) -> bool:
    """True for matgl's ``MLP`` and ``GatedMLP`` whose branches open with Linear layers of one kind."""
    first = _first_layers(mlp)
    expected = 2 if getattr(mlp, "gates", None) is not None else 1
    return (len(first) == expected and all(isinstance(layer, nn.Linear) for layer in first)
            and len({layer.bias is None for layer in first}) == 1)


def _split_linear(first: Sequence[nn.Linear], node_feat: Tensor, edge_feat: Tensor, src: Tensor, dst: Tensor,
                  extra: Tensor | None) -> list[Tensor]:
    """Each Linear of ``first`` applied to ``[node_feat[src], node_feat[dst], edge_feat(, extra)]``."""
    weight = torch.cat([layer.weight for layer in first])        # (outputs, n + n + m [+ k])
    bias = None if first[0].bias is None else torch.cat([layer.bias for layer in first])
    n, m = node_feat.shape[1], edge_feat.shape[1]
    per_atom = node_feat @ torch.cat([weight[:, :n], weight[:, n:2 * n]]).T   # the i and j blocks
    from_i, from_j = per_atom.split(weight.shape[0], dim=1)
    # index_select, not from_i[src]: on CPU the advanced-indexing kernel is ~10x slower for this gather
    hidden = (functional.linear(edge_feat, weight[:, 2 * n:2 * n + m], bias)
              + from_i.index_select(0, src) + from_j.index_select(0, dst))
    if extra is not None:
        hidden = hidden + functional.linear(extra, weight[:, 2 * n + m:])
    return list(hidden.split([layer.out_features for layer in first], dim=1))


def bond_mlp(mlp: nn.Module, node_feat: Tensor, edge_feat: Tensor, src: Tensor, dst: Tensor,
             extra: Tensor | None = None) -> Tensor:
    """``mlp(torch.hstack([node_feat[src], node_feat[dst], edge_feat, extra]))``, computed per atom where it can.

    Args:
        mlp: matgl ``MLP`` or ``GatedMLP`` (``layers(x) * gates(x)``) with ``splittable(mlp)``.
        node_feat: (atoms, n) atom features.
        edge_feat: (bonds, m) bond features.
        src, dst: (bonds,) the two atoms of each bond.
        extra: optional (bonds, k) features appended last (a graph state broadcast to its bonds).
    """
    hidden = _split_linear(_first_layers(mlp), node_feat, edge_feat, src, dst, extra)
    heads = [mlp.layers, mlp.gates] if getattr(mlp, "gates", None) is not None else [mlp.layers]
    outputs = []
    for head, x in zip(heads, hidden):
        for layer in list(head)[1:]:
            x = layer(x)
        outputs.append(x)
    return outputs[0] * outputs[1] if len(outputs) == 2 else outputs[0]
