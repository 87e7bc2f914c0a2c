"""matgl crystal graphs for a batch of structures, in one PyG ``Batch``.

matgl's ``Structure2Graph`` makes one PyG ``Data`` per structure (its own neighbour search, a dozen
small tensors) and ``Batch.from_data_list`` then merges them: 0.35 ms a structure, about a tenth of
scoring's time. Here the neighbour list comes from ``core.neighbors`` (found once per structure and
radius, and the same call with the same arguments as matgl's, so the bonds and their order are
identical) and the batch is concatenated with numpy: the model sees exactly the graph matgl builds.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from pymatgen.core import Element, Structure

from core.neighbors import neighbor_list


@functools.lru_cache(maxsize=16)
def _type_index(element_types: tuple[str, ...]) -> np.ndarray:
    """Atomic number -> position in ``element_types`` (-1: not covered)."""
    index = np.full(119, -1, dtype=np.int64)
    for position, symbol in enumerate(element_types):
        index[Element(symbol).Z] = position
    return index


def graph_batch(structures: Sequence[Structure], element_types: Sequence[str], cutoff_a: float,
                with_positions: bool = False) -> tuple[object, torch.Tensor]:
    """One PyG ``Batch`` of the crystal graphs of ``structures`` (bonds within ``cutoff_a`` Å) and their
    lattices, shape (B, 3, 3) Å, as matgl's converter and ``Batch.from_data_list`` would make them.

    The batch holds ``edge_index``, ``pbc_offset`` (image translation in cell vectors), ``node_type``
    (index into ``element_types``), ``frac_coords``, ``batch`` and ``ptr``; ``with_positions`` adds
    Cartesian ``pos`` and ``pbc_offshift`` (Å), which matgl's property models read directly.
    Every element must be in ``element_types`` (the models' input screen checks this first).
    """
    import matgl
    from torch_geometric.data import Batch

    types = _type_index(tuple(element_types))
    src, dst, images, node_types, fracs, lattices, sizes = [], [], [], [], [], [], []
    offset = 0
    for structure in structures:
        pairs = neighbor_list(structure, cutoff_a)
        cell = pairs.cell
        src.append(pairs.centres + offset)
        dst.append(pairs.neighbours + offset)
        images.append(pairs.images)
        node_types.append(types[cell.numbers])
        fracs.append(cell.frac_coords)
        lattices.append(cell.lattice)
        sizes.append(len(cell.numbers))
        offset += len(cell.numbers)
    counts = torch.tensor(sizes, dtype=torch.long)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(counts, 0)
    lattice = torch.as_tensor(np.stack(lattices), dtype=matgl.float_th)
    frac = torch.as_tensor(np.concatenate(fracs), dtype=matgl.float_th)
    offsets = torch.as_tensor(np.concatenate(images), dtype=matgl.float_th)
    graph = Batch(
        edge_index=torch.as_tensor(np.stack([np.concatenate(src), np.concatenate(dst)]), dtype=matgl.int_th),
        pbc_offset=offsets,
        node_type=torch.as_tensor(np.concatenate(node_types), dtype=torch.long),
        frac_coords=frac,
        batch=torch.repeat_interleave(torch.arange(len(sizes)), counts),
        ptr=ptr,
    )
    if with_positions:  # per structure, as matgl multiplies one graph's coordinates by its lattice
        edge_counts = [len(s) for s in src]
        graph.pos = torch.cat([f @ lat for f, lat in zip(frac.split(sizes), lattice)])
        graph.pbc_offshift = torch.cat([o @ lat for o, lat in zip(offsets.split(edge_counts), lattice)])
    return graph, lattice
