"""Rules for ops that join tensors: ``cat`` (and ``hstack``/``vstack``/``dstack``/
``column_stack`` of tensors of the same rank) and ``stack``.

Concatenation along a channel dim puts the label arrays end to end (paper Fig. 7);
along any other dim the tensors' channels meet position by position and are
unified. A dim labeled in one tensor and not in another pins, unless the other
is a parameter seen whole along it (a class token joining the token stream), which
is then sliced with the channels.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.concat import cat
    >>> REGISTRY.find(torch.ops.aten.cat.default) is cat
    True
"""
from __future__ import annotations

import numpy as np
from torch import fx

from .registry import REGISTRY, aten, packets


def _tensor_list(ctx, node):
    return [t for t in node.args[0] if isinstance(t, fx.Node)]


@REGISTRY.ops(aten.cat.default, aten.concat.default, aten.concatenate.default)
def cat(ctx, node):
    """Concatenation puts label arrays end to end (with offsets, paper Fig. 7)."""
    return _concatenated(ctx, node, ctx.arg(node, 1, "dim", 0) % len(ctx.shape(node)))


@REGISTRY.ops(*packets("hstack", "vstack", "dstack", "column_stack"))
def stacked(ctx, node):
    """``torch.hstack`` (``vstack``, ``dstack``, ``column_stack``) of tensors that already
    have the dims it joins along: a ``cat``; of lower-rank ones (it first reshapes them):
    every channel pins."""
    tensors = _tensor_list(ctx, node)
    rank = len(ctx.shape(node))
    name = node.target.overloadpacket.__name__
    dim = {"hstack": 1 if rank > 1 else 0, "vstack": 0, "dstack": 2, "column_stack": 1}[name]
    if any(len(ctx.shape(t)) != rank for t in tensors):
        for t in tensors:
            ctx.pin_value(t, f"{node.name}: {name} of tensors it reshapes")
        return {}
    return _concatenated(ctx, node, dim)


def _concatenated(ctx, node, dim: int):
    tensors = _tensor_list(ctx, node)
    pieces = [(ctx.of(t) or {}).get(dim) for t in tensors]
    out = {}
    if any(p is not None for p in pieces):
        out[dim] = np.concatenate([p if p is not None else np.full(ctx.shape(t)[dim], -1)
                                   for p, t in zip(pieces, tensors)]).astype(np.int64)
    out.update(_unify_other_dims(ctx, node, tensors, skip=dim))
    return out


@REGISTRY.ops(aten.stack.default)
def stack(ctx, node):
    tensors = _tensor_list(ctx, node)
    at = ctx.arg(node, 1, "dim", 0) % (len(ctx.shape(tensors[0])) + 1)
    return {d + (d >= at): lab for d, lab in _unify_other_dims(ctx, node, tensors).items()}


def _unify_other_dims(ctx, node, tensors, skip=None) -> dict:
    out = {}
    for t in tensors:
        for d, lab in (ctx.of(t) or {}).items():
            if d == skip:
                continue
            if d in out:
                ctx.unify(out[d], lab, f"{node.name}: joined with a fixed channel")
            else:
                out[d] = lab
    for d, lab in out.items():
        for t in tensors:
            if (ctx.of(t) or {}).get(d) is not None:
                continue
            behind = ctx.param_behind(t, d, len(lab))   # a class token joins the stream
            if behind is not None:
                ctx.param(behind[0], {behind[1]: lab})
            else:
                ctx.pin(lab, f"{node.name}: joined with an unlabeled tensor")
    return out
