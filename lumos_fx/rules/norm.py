"""Rules for normalization ops.

Per-channel normalizations (``aten.batch_norm``, ``aten.instance_norm``) are
*followers*: their affine parameters and running statistics are sliced with
the channels they normalize. Normalizations that mix channels (``layer_norm``
over a channel dim, ``group_norm``) would change when a channel disappears,
so they pin the channels they read.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.norm import per_channel_norm
    >>> REGISTRY.find(torch.ops.aten.batch_norm.default) is per_channel_norm
    True
"""
from __future__ import annotations

from .registry import REGISTRY, aten, packets


@REGISTRY.ops(aten.batch_norm.default, aten.instance_norm.default)
def per_channel_norm(ctx, node):
    """``(x, weight, bias, running_mean, running_var, training/use_input_stats, ...)``."""
    x = ctx.of(node.args[0]) or {}
    channels = x.get(1)
    for value in node.args[1:5]:
        if value is None:
            continue
        path = ctx.attr(value)
        if path is None:
            ctx.pin(channels, f"{node.name}: normalization with computed statistics")
            continue
        owner, _, name = path.rpartition(".")
        ctx.param(owner, name, {0: channels})
    return x


@REGISTRY.ops(aten.layer_norm.default)
def layer_norm(ctx, node):
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    normalized = range(rank - len(node.args[1]), rank)
    for d in normalized:
        ctx.pin(x.get(d), f"{node.name}: LayerNorm normalizes over the channel dim")
    return {d: lab for d, lab in x.items() if d not in normalized}


@REGISTRY.ops(*packets("group_norm", "local_response_norm", "rms_norm"))
def channel_mixing_norm(ctx, node):
    ctx.pin_inputs(node, f"{node.name}: {node.target} mixes channels")
    return {}
