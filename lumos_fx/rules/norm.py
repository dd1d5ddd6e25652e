"""Rules for normalization layers.

Per-channel normalizations (``BatchNorm*``, ``InstanceNorm*``) are *followers*:
their affine parameters and running statistics are sliced with the channels
they normalize. Normalizations that mix channels (``LayerNorm`` over a channel
dim, ``GroupNorm``, ``LocalResponseNorm``) would change when a channel
disappears, so they pin the channels they read.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.norm import NORM_SIZE_ATTRIBUTES
    >>> NORM_SIZE_ATTRIBUTES[torch.nn.BatchNorm2d]
    {'num_features': ('input', 1)}
"""
from __future__ import annotations

from torch import nn

from .registry import REGISTRY

_PER_CHANNEL = ("weight", "bias", "running_mean", "running_var")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


@REGISTRY.modules(*_BATCH_NORMS, *_INSTANCE_NORMS)
def per_channel_norm(ctx, node):
    mod = ctx.module(node)
    x = ctx.of(node.args[0]) or {}
    channels = x.get(1)
    for name in _PER_CHANNEL:
        if getattr(mod, name, None) is not None:
            ctx.param(node.target, name, {0: channels})
    return x


@REGISTRY.modules(nn.LayerNorm)
def layer_norm(ctx, node):
    mod = ctx.module(node)
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    normalized = range(rank - len(mod.normalized_shape), rank)
    for d in normalized:
        ctx.pin(x.get(d), f"{node.target}: LayerNorm normalizes over the channel dim")
    return {d: lab for d, lab in x.items() if d not in normalized}


@REGISTRY.modules(nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)
def channel_mixing_norm(ctx, node):
    ctx.pin_inputs(node, f"{node.target}: {type(ctx.module(node)).__name__} mixes channels")
    return {}


# ("input", d): the size of the module's input along dim d after extraction.
NORM_SIZE_ATTRIBUTES = {cls: {"num_features": ("input", 1)} for cls in _BATCH_NORMS + _INSTANCE_NORMS}
