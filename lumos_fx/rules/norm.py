"""Rules for normalization ops.

Per-channel normalizations (``aten.batch_norm``, ``aten.instance_norm``) are
*followers*: their affine parameters and running statistics are sliced with
the channels they normalize. ``layer_norm``/``rms_norm`` over the last dim gate
their input and keep the original divisor on extraction (exact), and so does group norm
with one group; with one channel per group it follows its channels like instance norm;
other groupings and normalization over several dims would change when a channel
disappears, so they pin the channels they read.

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
    _follow(ctx, node, node.args[1:5], x.get(1))
    return x


def _follow(ctx, node, values, channels) -> None:
    """Per-channel parameters and statistics are sliced with ``channels``."""
    for value in values:
        if value is None:
            continue
        path = ctx.attr(value)
        if path is None:
            ctx.pin(channels, f"{node.name}: normalization with computed statistics")
            continue
        ctx.param(path, {0: channels})


@REGISTRY.ops(aten.layer_norm.default, aten.rms_norm.default)
def layer_norm(ctx, node):
    """LayerNorm/RMSNorm over the last dim stays exact when channels go, if the pruned
    norm keeps the original divisor: closed channels are gated to exactly zero at its
    input, so the full-width mean and variance follow from the kept channels (see
    :mod:`lumos_fx.passes.codegen`). Over several dims it pins them."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    normalized = range(rank - len(node.args[1]), rank)
    last = rank - 1
    if len(node.args[1]) != 1 or last not in x:
        for d in normalized:
            ctx.pin(x.get(d), f"{node.name}: LayerNorm normalizes over the channel dim")
        return {d: lab for d, lab in x.items() if d not in normalized}
    labels = x[last]
    ctx.consume(node, 0, last)
    affine = (2, 3) if node.target is aten.layer_norm.default else (2,)
    _follow(ctx, node, [ctx.arg(node, index) for index in affine], labels)
    node.meta.setdefault("lumos", {}).update(codegen="layer_norm", layer_norm={"labels": labels})
    return dict(x)


@REGISTRY.ops(aten.group_norm.default)
def group_norm(ctx, node):
    """``(x, num_groups, weight, bias, eps, ...)``. One channel per group normalizes each
    channel alone, like InstanceNorm (Wav2Vec2's feature encoder): a follower whose
    ``num_groups`` becomes the kept channel count. Larger groups (a U-Net's
    ``GroupNorm(32, C)``) normalize each group on its own, so a whole group can go:
    its channels are one channel, and ``num_groups`` becomes the kept group count."""
    x = ctx.of(node.args[0]) or {}
    groups, channels = int(node.args[1]), ctx.shape(node.args[0])[1]
    if groups == 1 and x.get(1) is not None:
        return _one_group(ctx, node, x)
    if groups != channels and x.get(1) is None:
        return channel_mixing_norm(ctx, node)
    per_group = channels // groups
    if per_group > 1:
        blocks = x[1].reshape(groups, per_group)
        for column in range(1, per_group):
            ctx.unify(blocks[:, 0], blocks[:, column], f"{node.name}: one group of group_norm")
    for d, lab in x.items():
        if d != 1:
            ctx.pin(lab, f"{node.name}: group_norm normalizes over a dim that carries channels")
    _follow(ctx, node, [ctx.arg(node, 2, "weight"), ctx.arg(node, 3, "bias")], x.get(1))
    if x.get(1) is not None:
        node.meta.setdefault("lumos", {}).update(codegen="num_groups", groups=x[1],
                                                 per_group=per_group)
    return {1: x[1]} if x.get(1) is not None else {}


def _one_group(ctx, node, x):
    """One group normalizes every channel and position together (PoolFormer's and
    ConvNeXt-style ``GroupNorm(1, C)``): exact like :func:`layer_norm` over the channel
    dim 1, its input gated and the original divisor kept on extraction."""
    labels = x[1]
    for d, lab in x.items():
        if d != 1:
            ctx.pin(lab, f"{node.name}: group_norm normalizes over a dim that carries channels")
    ctx.consume(node, 0, 1)
    _follow(ctx, node, [ctx.arg(node, 2, "weight"), ctx.arg(node, 3, "bias")], labels)
    node.meta.setdefault("lumos", {}).update(codegen="layer_norm", layer_norm={"labels": labels})
    return {1: labels}


@REGISTRY.ops(*packets("native_group_norm", "local_response_norm"))
def channel_mixing_norm(ctx, node):
    ctx.pin_inputs(node, f"{node.name}: {node.target} mixes channels")
    return {}
