"""Rules for scatters and gathers along a non-channel dim: message passing.

Graph layers gather node features along the node dim (``index_select``,
``x[edge_index[0]]``, ``gather``) and aggregate messages back with
``scatter_add_``/``scatter_reduce_``/``index_add_`` into a tensor the layer
allocates (``new_zeros``). Along every other dim these ops work channel by
channel (a sum, mean, max or min over neighbours, never over channels), so the
channels of the destination, the index (PyG expands it to the source's shape)
and the source are one set of channels, and the result keeps them. Scattering
or gathering along a channel dim pins it.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.scatter import scatter
    >>> REGISTRY.find(torch.ops.aten.scatter_reduce_.two) is scatter
    True
"""
from __future__ import annotations

from .registry import REGISTRY, aten, packets


def _join(ctx, node, tensors, dim: int, source=None) -> dict:
    """Unify the channels of ``tensors`` on every dim but ``dim`` (same rank, no
    broadcasting); an unlabeled operand pins the channels it meets. With a
    ``source`` (what a scatter writes), a dim the source does not label is not a
    channel dim of the result."""
    rank = len(ctx.shape(node))
    out = {}
    for d in range(rank):
        found = [(t, (ctx.of(t) or {}).get(d)) for t in tensors]
        if d == dim:
            for _, lab in found:
                ctx.pin(lab, f"{node.name}: scatters or gathers along a channel dim")
            continue
        labeled = [lab for _, lab in found if lab is not None]
        if not labeled:
            continue
        for lab in labeled[1:]:
            ctx.unify(labeled[0], lab, f"{node.name}: aggregated with fixed channels")
        unlabeled = [t for t, lab in found if lab is None and ctx.shape(t)[d] != 1]
        for t in unlabeled:
            ctx.pin(labeled[0], f"{node.name}: aggregated with an unlabeled tensor {t.name}")
        if not (unlabeled and source is not None and (ctx.of(source) or {}).get(d) is None):
            out[d] = labeled[0]
    return out


@REGISTRY.ops(*packets("scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
                       "scatter", "scatter_"))
def scatter(ctx, node):
    """``scatter_*(self, dim, index, src, ...)``: index and src have self's rank."""
    self_, dim, index, src = node.args[:4]
    rank = len(ctx.shape(self_))
    tensors = [t for t in (self_, index, src) if hasattr(t, "op")]
    return _join(ctx, node, tensors, dim % rank, source=src)


@REGISTRY.ops(*packets("index_add", "index_add_", "index_reduce", "index_reduce_",
                       "index_copy", "index_copy_"))
def index_scatter(ctx, node):
    """``index_add_(self, dim, index, source)``: a 1-D index along ``dim``."""
    self_, dim, _, source = node.args[:4]
    return _join(ctx, node, [self_, source], dim % len(ctx.shape(self_)), source=source)


@REGISTRY.ops(aten.gather.default)
def gather(ctx, node):
    """``gather(self, dim, index)``: the result has the index's shape."""
    self_, dim, index = node.args[:3]
    return _join(ctx, node, [self_, index], dim % len(ctx.shape(self_)))
