"""Pin the channels of a parameter that some op reads whole while another slices it.

A rule that slices a parameter along channels records the node it ran for
(:meth:`~lumos_fx.rules.context.RuleContext.param`). Another op may read the
same parameter, directly or through views of it (``w.t()``, ``w.view(...)``,
``1 + w``), without knowing about channels: PyG's ``TopKPooling`` scores nodes
with ``(x * w).sum(-1) / w.norm(dim=-1)``, and the norm sums over the channels the
product slices. After extraction that op would read the sliced parameter and
compute something else. When that op's result comes from parameters and
buffers alone (the norm), extraction stores the result, computed once from the
whole parameter, as a buffer (see :mod:`lumos_fx.rules.computed_weights`);
otherwise every channel dim of the parameter is pinned.

Example::

    >>> import torch
    >>> from torch import nn
    >>> import lumos_fx as lumos
    >>> class Scored(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin, self.w = nn.Linear(3, 8), nn.Parameter(torch.randn(8))
    ...     def forward(self, x):
    ...         return (self.lin(x) * self.w).sum(-1) / self.w.norm()
    >>> gated = lumos.compile(Scored(), example_inputs=(torch.randn(4, 3),))
    >>> with torch.no_grad():
    ...     lumos.gates(gated)["lin"].log_alpha[:5] = -10.0
    >>> pruned = lumos.extract(gated)
    >>> tuple(pruned.w.shape), lumos.verify(gated, pruned, (torch.randn(6, 3),)) < 1e-5
    ((3,), True)
"""
from __future__ import annotations

import torch
from torch import fx

from ..rules.computed_weights import computed_weight


_READS_NO_VALUES = (torch.ops.aten._assert_tensor_metadata.default,)
#: ops that cut a tensor into parts (a packed q/k/v projection weight)
_PARTS = ("split", "split_with_sizes", "chunk", "unbind", "tensor_split")


def _packet(node: fx.Node) -> str:
    return getattr(getattr(node.target, "overloadpacket", None), "__name__", "")


def pin_unaccounted_reads(ctx) -> None:
    """For the graph ``ctx`` is on: pin the labeled dims of every sliced parameter that
    reaches, through views only, a node whose rule did not slice it."""
    for node in ctx.root.graph.nodes:
        path = ctx.attr(node)
        spec = ctx.params.get(path) if path is not None else None
        if spec is None or not spec.dims:
            continue
        readers = ctx.param_readers.get(path, set())
        for reader in _readers(ctx, node, readers):
            if not _stored_whole(ctx, reader):
                slicer = min((n.name for n in readers), default="an op")
                for labels in spec.dims.values():
                    ctx.pin(labels, f"{reader.name}: reads parameter {path} whole, "
                                    f"which {slicer} slices")
                break


def _stored_whole(ctx, reader: fx.Node) -> bool:
    """Whether ``reader`` computes from parameters alone and extraction will store its
    result (registered here)."""
    path = computed_weight(ctx, reader, reader, "constant", numbered=True, as_buffer=True)
    if path is None:
        return False
    ctx.param(path, {})
    return True


def _readers(ctx, node: fx.Node, accounted: set) -> list[fx.Node]:
    """The first nodes past the views of ``node`` (a ``get_attr``) that are not views
    of it themselves and whose rule did not slice it (a rule that sliced a view, Gemma's
    ``1 + w``, labeled what follows); a check of dtype and device reads nothing."""
    found, frontier = [], [node]
    while frontier:
        value = frontier.pop()
        for user in value.users:
            if user in accounted or user.target in _READS_NO_VALUES:
                continue
            if user.op == "call_function" and user.args and user.args[0] is value and \
                    _packet(user) in _PARTS:
                frontier.extend(user.users)           # the parts, each a view
            elif user.op == "call_function" and user.args and user.args[0] is value and \
                    ctx.weight_view(user, pointwise=True) is not None:
                frontier.append(user)
            else:
                found.append(user)
    return found
