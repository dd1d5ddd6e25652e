"""Rules for reductions and pooling.

Pooling works channel by channel, so channels (dim 1) pass through and spatial
dims lose their labels. A reduction over non-channel dims (a global average
pool written as ``x.mean((2, 3))``) keeps the channels. A ``sum`` over a channel
dim is zero-padding invariant: it becomes a gated consumer and stays exact; so
is a vector norm of order ``>= 0``, and a ``mean`` does too once extraction
rewrites it as ``sum / original_count``. Any other reduction over a channel dim
(max, std, logsumexp) would change when a channel disappears, so it pins the
channels. ``grid_sample`` resamples each channel on its own; ``cdist`` is a
distance over the feature dim, zero-invariant like a norm.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.reduce import reduction
    >>> REGISTRY.find(torch.ops.aten.mean.dim) is reduction
    True
"""
from __future__ import annotations

import math

from .registry import REGISTRY, aten, packets

_POOLS = packets(
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
    "upsample_bilinear2d", "upsample_bicubic2d", "upsample_trilinear3d",
    "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
)


def pool(ctx, node):
    """Channels (dim 1) pass through; spatial dims lose their labels."""
    x = ctx.of(node.args[0]) or {}
    for d, lab in x.items():
        if d != 1:
            ctx.pin(lab, f"{node.name}: pooling over a channel dim")
    out = {1: x[1]} if 1 in x else {}
    if ctx.shape(node) is None:  # with indices: (values, indices)
        return (out, out)
    return out


REGISTRY.add(pool, _POOLS)


@REGISTRY.ops(*packets("max_unpool1d", "max_unpool2d", "max_unpool3d"))
def unpool(ctx, node):
    """``max_unpool(x, indices, output_size)``: indices address positions inside each
    channel's plane, so the channels of ``x`` and ``indices`` (one group) pass through."""
    x = pool(ctx, node)
    index_labels = (ctx.of(node.args[1]) or {}).get(1)
    if 1 in x and index_labels is not None:
        ctx.unify(x[1], index_labels, f"{node.name}: unpooled with another tensor's indices")
    elif 1 in x or index_labels is not None:
        ctx.pin(x.get(1, index_labels), f"{node.name}: indices from unlabeled channels")
    return x


_ZERO_INVARIANT = (aten.sum, aten.nansum)
_MEANS = (aten.mean,)


def _reduced_dims(dim, rank: int) -> list[int]:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return list(range(rank))
    dims = dim if isinstance(dim, (tuple, list)) else [dim]
    return sorted(int(d) % rank for d in dims)


def reduction(ctx, node):
    """``mean.dim``, ``sum.dim_IntList``, ``amax`` and friends; ``max.dim`` gives a tuple."""
    packet = node.target.overloadpacket
    return _reduce(ctx, node, ctx.arg(node, 1, "dim"), bool(ctx.arg(node, 2, "keepdim", False)),
                   zero_invariant=packet in _ZERO_INVARIANT + _MEANS, mean=packet in _MEANS)


def vector_norm(ctx, node):
    """``linalg_vector_norm(x, ord, dim, keepdim)`` and ``norm(x, p, dim, keepdim)``: for
    ``ord >= 0`` (``inf`` too) a closed channel, gated to 0, adds nothing, so a norm over
    a channel dim (``F.normalize``) is a gated consumer like ``sum``; negative orders pin."""
    order = ctx.arg(node, 1, "ord" if node.target.overloadpacket is aten.linalg_vector_norm
                    else "p", 2)
    invariant = order is None or (isinstance(order, (int, float)) and order >= 0)
    return _reduce(ctx, node, ctx.arg(node, 2, "dim"), bool(ctx.arg(node, 3, "keepdim", False)),
                   zero_invariant=invariant)


def _reduce(ctx, node, dim, keepdim: bool, zero_invariant: bool, mean: bool = False):
    packet = node.target.overloadpacket
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    if not (dim is None or isinstance(dim, int) or all(isinstance(d, int) for d in dim)):
        ctx.pin_value(x, f"{node.name}: {packet.__name__} over a computed dim")
        return {}
    reduced = _reduced_dims(dim, rank)
    channel_dims = [d for d in reduced if d in x]
    if len(channel_dims) == 1 and zero_invariant and dim is not None:
        # zero-padding invariant: gate the channels, closed ones add nothing
        ctx.consume(node, 0, channel_dims[0])
        if mean:
            shape = ctx.shape(node.args[0])
            node.meta.setdefault("lumos", {}).update(
                codegen="mean", mean={"count": math.prod(shape[d] for d in reduced)})
    else:
        for d in channel_dims:
            ctx.pin(x[d], f"{node.name}: {packet.__name__} over a channel dim")
    out = {}
    for d, lab in x.items():
        if d in reduced:
            continue
        out[d if keepdim else d - sum(r < d for r in reduced)] = lab
    if ctx.shape(node) is None:  # max/min with a dim return (values, indices)
        return (out, out)
    return out


REGISTRY.add(vector_norm, packets("linalg_vector_norm", "norm"))


REGISTRY.add(reduction, packets(
    "mean", "sum", "nansum", "amax", "amin", "std", "var", "prod",
    "logsumexp", "nanmean", "max", "min", "median", "argmax", "argmin", "all", "any",
    "std_mean", "var_mean"))


@REGISTRY.ops(*packets("grid_sampler", "grid_sampler_2d", "grid_sampler_3d"))
def grid_sample(ctx, node):
    """``grid_sample(x, grid)``: each channel of ``x`` is resampled on its own, so dim 1
    passes through; labeled spatial dims of ``x`` and anything labeled in ``grid`` (its
    last dim holds coordinates) pin."""
    ctx.pin_value(node.args[1], f"{node.name}: a sampling grid with channels")
    return pool(ctx, node)


@REGISTRY.ops(aten.cdist.default, aten._cdist_forward.default)
def cdist(ctx, node):
    """``cdist(x1, x2, p)``: ``(B, P, M), (B, R, M) -> (B, P, R)``. Over the feature dim
    ``M`` a p-norm of differences with ``p >= 0``: a channel closed in both operands
    (gated to 0 in each) adds nothing, so ``M`` is gated at both and their channels are
    one; batch dims pass through."""
    x1, x2 = (ctx.of(a) or {} for a in node.args[:2])
    rank = len(ctx.shape(node.args[0]))
    if len(ctx.shape(node.args[1])) != rank:
        ctx.pin_inputs(node, f"{node.name}: distances between operands of different ranks")
        return {}
    p = ctx.arg(node, 2, "p", 2.0)
    _gated_at_both(ctx, node, x1, x2, rank - 1, "a distance over features",
                   invariant=isinstance(p, (int, float)) and p >= 0)
    for labels in (x1, x2):
        ctx.pin(labels.get(rank - 2), f"{node.name}: distances between channels")
    out = {}
    for d in range(rank - 2):
        if d in x1 and d in x2:
            ctx.unify(x1[d], x2[d], f"{node.name}: batch dims of both operands")
        if d in x1 or d in x2:
            out[d] = x1.get(d, x2.get(d))
    return out


@REGISTRY.ops(aten.cosine_similarity.default)
def cosine_similarity(ctx, node):
    """``cosine_similarity(x1, x2, dim)``: a dot product over norms along ``dim``; a channel
    closed in both operands (gated to 0 in each) adds nothing to any of them, so ``dim``
    is gated at both and their channels are one. Other dims pass through, joined."""
    x1, x2 = (ctx.of(a) or {} for a in node.args[:2])
    shapes = [ctx.shape(a) for a in node.args[:2]]
    if shapes[0] != shapes[1]:
        ctx.pin_value(x1, f"{node.name}: cosine similarity of broadcast operands")
        ctx.pin_value(x2, f"{node.name}: cosine similarity of broadcast operands")
        return {}
    rank = len(shapes[0])
    dim = ctx.arg(node, 2, "dim", 1) % rank
    out = {}
    for d in range(rank):
        labels = _gated_at_both(ctx, node, x1, x2, d, "cosine similarity", gate=d == dim)
        if labels is not None and d != dim:
            out[d - (d > dim)] = labels
    return out


def _gated_at_both(ctx, node, x1: dict, x2: dict, dim: int, what: str,
                   invariant: bool = True, gate: bool = True):
    """Dim ``dim`` of the two operands of a symmetric op: one set of channels (gated at
    both with ``gate``, which is exact when a channel closed in both adds nothing,
    ``invariant``); its labels, or None after pinning when only one operand labels it."""
    pair = [x1.get(dim), x2.get(dim)]
    if any(lab is None for lab in pair) or not invariant:
        for lab in pair:
            ctx.pin(lab, f"{node.name}: {what} with an unlabeled operand")
        return None
    ctx.unify(pair[0], pair[1], f"{node.name}: {what} of the same channels")
    if gate:
        ctx.consume(node, 0, dim)
        ctx.consume(node, 1, dim)
    return pair[0]
