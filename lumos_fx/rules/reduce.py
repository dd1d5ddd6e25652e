"""Rules for reductions and pooling.

Pooling works channel by channel, so channels pass through and spatial dims
lose their labels. A reduction over non-channel dims (a global average pool
written as ``x.mean((2, 3))``) keeps the channels. A ``sum`` over a channel dim
is zero-padding invariant: it becomes a gated consumer and stays exact; a
``mean`` does too once extraction rewrites it as ``sum / original_count``. Any
other reduction over a channel dim (max, std, norm) would change when a
channel disappears, so it pins the channels.

Example::

    >>> from lumos_fx.rules import REGISTRY
    >>> REGISTRY.has_method("mean") and REGISTRY.has_method("sum")
    True
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import REGISTRY

_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)
_POOL_FUNCTIONS = (
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d, F.interpolate,
    F.upsample, torch.max_pool1d, torch.max_pool2d, torch.avg_pool1d,
    F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices,
    F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d_with_indices,
)
_UNPOOL_MODULES = (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)


def pool(ctx, node):
    """Channels (dim 1) pass through; spatial dims lose their labels."""
    x = ctx.of(node.args[0]) or {}
    for d, lab in x.items():
        if d != 1:
            ctx.pin(lab, f"{node.name}: pooling over a channel dim")
    out = {1: x[1]} if 1 in x else {}
    shape = ctx.shape(node)
    if shape is None:  # return_indices=True gives (values, indices)
        return (out, out)
    return out


REGISTRY.add(pool, modules=_POOL_MODULES, functions=_POOL_FUNCTIONS)


def unpool(ctx, node):
    """``MaxUnpool(x, indices)``: indices address positions inside each channel's
    plane, so the channels of ``x`` and ``indices`` (one group) pass through."""
    x = pool(ctx, node)
    indices = ctx.arg(node, 1, "indices")
    index_labels = (ctx.of(indices) or {}).get(1)
    if 1 in x and index_labels is not None:
        ctx.unify(x[1], index_labels, f"{node.name}: unpooled with another tensor's indices")
    elif 1 in x or index_labels is not None:
        ctx.pin(x.get(1, index_labels), f"{node.name}: indices from unlabeled channels")
    if len(node.args) > 2 or node.kwargs.get("output_size") is not None:
        ctx.pin(x.get(1), f"{node.name}: explicit output_size")
    return x


REGISTRY.add(unpool, modules=_UNPOOL_MODULES, functions=(F.max_unpool1d, F.max_unpool2d,
                                                         F.max_unpool3d))

_ZERO_INVARIANT = ("sum",)
_MEANS = ("mean",)


def _reduced_dims(dim, rank: int) -> list[int]:
    if dim is None:
        return list(range(rank))
    dims = dim if isinstance(dim, (tuple, list)) else [dim]
    return sorted(int(d) % rank for d in dims)


def reduction(ctx, node):
    """``x.mean(dims, keepdim)``, ``x.sum(...)``, ``x.amax(...)`` and friends."""
    name = node.target if isinstance(node.target, str) else node.target.__name__
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    dim = ctx.arg(node, 1, "dim")
    if dim is not None and not isinstance(dim, (int, tuple, list)):
        ctx.pin_value(x, f"{node.name}: {name} over a computed dim")
        return {}
    if isinstance(dim, (tuple, list)) and not all(isinstance(d, int) for d in dim):
        ctx.pin_value(x, f"{node.name}: {name} over a computed dim")
        return {}
    reduced = _reduced_dims(dim, rank)
    keepdim = bool(ctx.arg(node, 2, "keepdim", False))
    channel_dims = [d for d in reduced if d in x]
    if len(channel_dims) == 1 and name in _ZERO_INVARIANT + _MEANS and dim is not None:
        # zero-padding invariant: gate the channels, closed ones add nothing
        ctx.consume(node, 0, channel_dims[0])
        if name in _MEANS:
            shape = ctx.shape(node.args[0])
            node.meta.setdefault("lumos", {}).update(
                codegen="mean", mean={"count": math.prod(shape[d] for d in reduced)})
    else:
        for d in channel_dims:
            ctx.pin(x[d], f"{node.name}: {name} over a channel dim")
    out = {}
    for d, lab in x.items():
        if d in reduced:
            continue
        out[d if keepdim else d - sum(r < d for r in reduced)] = lab
    if ctx.shape(node) is None:  # max/min with a dim return (values, indices)
        return (out, out)
    return out


_REDUCTIONS = ("mean", "sum", "nansum", "amax", "amin", "std", "var", "norm", "prod",
               "logsumexp", "nanmean", "max", "min", "median", "argmax", "argmin", "all", "any")


def _reduction_or_elementwise(ctx, node):
    """``torch.max(a, b)`` is elementwise; ``torch.max(a, dim)`` is a reduction."""
    from .elementwise import elementwise
    if len(node.args) > 1 and hasattr(node.args[1], "op"):
        return elementwise(ctx, node)
    return reduction(ctx, node)


REGISTRY.add(_reduction_or_elementwise, methods=_REDUCTIONS,
             functions=tuple(getattr(torch, n) for n in _REDUCTIONS if hasattr(torch, n)))
