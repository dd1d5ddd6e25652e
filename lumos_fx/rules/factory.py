"""Rules for tensors a model makes itself (``torch.zeros(B, C, M)``) and writes into.

A hand-written neural operator allocates its output and fills part of it:
``out = torch.zeros(x.size(0), C, M); out[:, :, :m] = einsum(...)``. torch.export
records ``aten.zeros([s0, 8, 9])``, views of it (``slice``) and an in-place
``copy_``. A factory's literal dims get fresh channel labels; ``copy_`` unifies
what is written with where it goes (through the views, which share the labels),
so the allocation joins the written channels' group; extraction rewrites the
literal size to the kept count. A factory dim nothing labeled is written into
keeps its size.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.factory import factory
    >>> REGISTRY.find(torch.ops.aten.zeros.default) is factory
    True
"""
from __future__ import annotations

from .elementwise import elementwise, unary
from .registry import REGISTRY, aten, packets

_SIZE_ARG = {**{op: 0 for op in packets("zeros", "ones", "empty", "full")},
             **{op: 1 for op in packets("new_zeros", "new_ones", "new_empty", "new_full")}}


def factory(ctx, node):
    """Fresh labels for every literal dim larger than one; the size becomes rewritable."""
    size_arg = _SIZE_ARG[node.target.overloadpacket]
    sizes = ctx.arg(node, size_arg, "size")
    if not isinstance(sizes, (list, tuple)) or ctx.shape(node) is None:
        return {}
    graph = "t" if ctx.training else "e"
    out = {d: ctx.produce(node, size, kind="factory", key=f"{graph}:{node.name}:{d}")
           for d, size in enumerate(sizes) if isinstance(size, int) and size > 1}
    node.meta.setdefault("lumos", {}).update(
        codegen="factory_size", factory={"arg": size_arg, "sizes": out})
    return out


REGISTRY.add(factory, list(_SIZE_ARG))


# dst.copy_(src): what is written and where it goes are the same channels
REGISTRY.add(elementwise, (aten.copy_.default, aten.copy.default))
REGISTRY.add(unary, packets("fill_", "zero_", "fill"))
