"""Rule for ``F.pad`` / ``nn.*Pad*``: padding spatial dims keeps the channels.

``F.pad(x, (left, right, top, bottom, ...))`` pads the last dims, two numbers
per dim. Padding a channel dim would add channels that no producer owns, so
it pins that dim.

Example::

    >>> from lumos_fx.rules.pad import padded_dims
    >>> padded_dims((1, 1, 0, 0), rank=4)   # pads W only; H has zero padding
    [3]
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import REGISTRY

_PAD_MODULES = tuple(getattr(nn, name) for name in (
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
    "ReplicationPad2d", "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d",
) if hasattr(nn, name))


def padded_dims(pad, rank: int) -> list[int]:
    """The dims a ``pad`` tuple actually changes."""
    return [rank - 1 - i // 2 for i in range(0, len(pad), 2) if pad[i] or pad[i + 1]]


def _pad(ctx, node, pad):
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    if not all(isinstance(p, int) for p in pad):
        ctx.pin_value(x, f"{node.name}: padding by computed amounts")
        return {}
    padded = padded_dims(pad, rank)
    for d in padded:
        ctx.pin(x.get(d), f"{node.name}: pads a channel dim")
    # A padded dim is longer than its input: its positions are no longer the input's.
    return {d: lab for d, lab in x.items() if d not in padded}


@REGISTRY.functions(F.pad)
def pad_function(ctx, node):
    return _pad(ctx, node, ctx.arg(node, 1, "pad"))


@REGISTRY.modules(*_PAD_MODULES)
def pad_module(ctx, node):
    return _pad(ctx, node, ctx.module(node).padding)
