"""Rules for ops that work along one dim they name: flips, rolls, scans, sorts, windows.

``torch.roll`` for a periodic boundary, ``cumsum`` over time, ``diff`` of a
series, ``sort``/``topk`` over tokens, ``x.unfold(dim, size, step)`` windows:
every other dim passes through untouched, so channels elsewhere keep their
labels. Along a channel dim these ops mix or move channels in ways extraction
cannot rewrite, so that dim pins; ``flip`` is the exception (the kept channels
come out reversed too). ``im2col`` (``nn.Unfold``) copies each channel into a
block of ``kernel`` positions and ``col2im`` (``nn.Fold``) sums such blocks back.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.along_dim import along_dim
    >>> REGISTRY.find(torch.ops.aten.roll.default) is along_dim
    True
"""
from __future__ import annotations

import math

import numpy as np

from .registry import REGISTRY, aten, packets

# op packet -> (position of its dim argument, its name, default; True: several dims)
_DIM_ARG = {
    "roll": (2, "dims", (), True), "cumsum": (1, "dim", None, False),
    "cumprod": (1, "dim", None, False), "logcumsumexp": (1, "dim", None, False),
    "cummax": (1, "dim", None, False), "cummin": (1, "dim", None, False),
    "diff": (2, "dim", -1, False), "sort": (1, "dim", -1, False),
    "argsort": (1, "dim", -1, False), "topk": (2, "dim", -1, False),
    "unfold": (1, "dimension", None, False),
}


def along_dim(ctx, node):
    """Labels of dims the op does not work along pass through; the op's dims pin."""
    packet = node.target.overloadpacket.__name__
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    index, name, default, several = _DIM_ARG[packet]
    dims = ctx.arg(node, index, name, default)
    if several and not dims:                      # roll with no dims: over the flattened tensor
        ctx.pin_value(x, f"{node.name}: {packet} over the flattened tensor")
        return {}
    dims = [d % rank for d in (dims if several else [dims])]
    out = {}
    for d, lab in x.items():
        if d in dims:
            ctx.pin(lab, f"{node.name}: {packet} along a channel dim")
        else:
            out[d] = lab
    if packet == "diff":
        _join_ends(ctx, node, out, dims[0])
    if ctx.shape(node) is None:                   # (values, indices)
        return tuple(dict(out) for _ in node.meta.get("tensor_meta") or ())
    return out


def _join_ends(ctx, node, out: dict, dim: int) -> None:
    """``diff(x, prepend=p, append=a)`` concatenates ``p`` and ``a`` to ``x`` along ``dim``:
    their channels on the other dims are ``x``'s."""
    for name, index in (("prepend", 3), ("append", 4)):
        end = ctx.arg(node, index, name)
        if end is None:
            continue
        labels = ctx.of(end) or {}
        for d in set(labels) | set(out):      # (out has no labels along dim)
            if d in labels and d in out:
                ctx.unify(out[d], labels[d], f"{node.name}: diff joined with a fixed channel")
            else:
                for lab in (labels.get(d), out.get(d)):
                    ctx.pin(lab, f"{node.name}: diff joined with an unlabeled tensor")


REGISTRY.add(along_dim, packets(*_DIM_ARG))


@REGISTRY.ops(*packets("tril", "triu"))
def triangle(ctx, node):
    """``tril``/``triu`` work on the last two dims (a causal mask of scores)."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    for d in (rank - 2, rank - 1):
        ctx.pin(x.get(d), f"{node.name}: a triangle over a channel dim")
    return {d: lab for d, lab in x.items() if d < rank - 2}


@REGISTRY.ops(*packets("linalg_cross", "cross"))
def cross(ctx, node):
    """``cross(a, b, dim)``: the product of 3-vectors along ``dim``; every other dim is
    elementwise (``(B, C, 3)`` vector features keep their channels ``C``, joined)."""
    rank = len(ctx.shape(node))
    dim = ctx.arg(node, 2, "dim", -1)
    dim = (dim if dim is not None else next(
        d for d, size in enumerate(ctx.shape(node)) if size == 3)) % rank
    out = {}
    for value in node.args[:2]:
        labels = ctx.of(value) or {}
        offset = rank - len(ctx.shape(value))
        for d, lab in labels.items():
            at = d + offset
            if at == dim or ctx.shape(value)[d] != ctx.shape(node)[at]:
                ctx.pin(lab, f"{node.name}: a cross product over a channel dim")
            elif at in out:
                ctx.unify(out[at], lab, f"{node.name}: a cross product of fixed channels")
            else:
                out[at] = lab
    for value in node.args[:2]:        # a dim one operand labels and the other does not
        labels, offset = ctx.of(value) or {}, rank - len(ctx.shape(value))
        for at, lab in out.items():
            if at - offset >= 0 and at - offset not in labels and \
                    ctx.shape(value)[at - offset] != 1:
                ctx.pin(lab, f"{node.name}: a cross product with an unlabeled tensor")
    return out


@REGISTRY.ops(aten.flip.default)
def flip(ctx, node):
    """Flipped channels: the kept ones come out reversed as well, nothing to rewrite."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    dims = {d % rank for d in node.args[1]}
    return {d: lab[::-1].copy() if d in dims else lab for d, lab in x.items()}


def _channel_labels(ctx, node, channel: int, other: str):
    """The labels of the input's dim ``channel``; every other labeled dim pins."""
    x = ctx.of(node.args[0]) or {}
    for d, lab in x.items():
        if d != channel:
            ctx.pin(lab, f"{node.name}: {node.target.overloadpacket.__name__} over a labeled "
                         f"{other} dim")
    return x.get(channel)


@REGISTRY.ops(aten.im2col.default)
def im2col(ctx, node):
    """``(N, C, H, W) -> (N, C * kh * kw, L)``: channel ``c`` owns block ``c`` of rows."""
    channel = len(ctx.shape(node.args[0])) - 3
    labels = _channel_labels(ctx, node, channel, "spatial")
    return {} if labels is None else {channel: np.repeat(labels, math.prod(node.args[1]))}


@REGISTRY.ops(aten.col2im.default)
def col2im(ctx, node):
    """``(N, C * kh * kw, L) -> (N, C, H, W)``: when each block of rows is one channel's."""
    channel = len(ctx.shape(node.args[0])) - 2
    labels = _channel_labels(ctx, node, channel, "position")
    if labels is None:
        return {}
    blocks = labels.reshape(-1, math.prod(node.args[2]))
    if not (blocks == blocks[:, :1]).all():
        ctx.pin(labels, f"{node.name}: col2im of rows that mix channels")
        return {}
    return {channel: blocks[:, 0].copy()}
