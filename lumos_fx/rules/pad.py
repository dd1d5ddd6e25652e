"""Rule for padding ops: padding spatial dims keeps the channels.

``F.pad(x, (left, right, top, bottom, ...))`` pads the last dims, two numbers
per dim (``aten.pad``, ``aten.constant_pad_nd``, ``aten.reflection_pad2d``, ...).
Padding a channel dim would add channels that no producer owns, so it pins
that dim.

Example::

    >>> from lumos_fx.rules.pad import padded_dims
    >>> padded_dims((1, 1, 0, 0), rank=4)   # pads W only; H has zero padding
    [3]
"""
from __future__ import annotations

from .registry import REGISTRY, packets


def padded_dims(pad, rank: int) -> list[int]:
    """The dims a ``pad`` tuple actually changes."""
    return [rank - 1 - i // 2 for i in range(0, len(pad), 2) if pad[i] or pad[i + 1]]


@REGISTRY.ops(*packets(
    "pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "_pad_circular"))
def pad(ctx, node):
    x = ctx.of(node.args[0]) or {}
    amounts = node.args[1]
    rank = len(ctx.shape(node.args[0]))
    if not all(isinstance(p, int) for p in amounts):
        ctx.pin_value(x, f"{node.name}: padding by computed amounts")
        return {}
    padded = padded_dims(amounts, rank)
    for d in padded:
        ctx.pin(x.get(d), f"{node.name}: pads a channel dim")
    # A padded dim is longer than its input: its positions are no longer the input's.
    return {d: lab for d, lab in x.items() if d not in padded}
