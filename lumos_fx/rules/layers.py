"""Rules for layers with weights: the producers and consumers of channels.

``Linear`` reads its last input dim through weight columns and creates its
output features; ``Conv*d`` does the same on dim 1 (grouped convolutions pin
their channels); ``ConvTranspose*d`` keeps its weight as ``(in, out, ...)``;
``Embedding`` creates its embedding columns from integer inputs (never gated).

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.layers import linear
    >>> REGISTRY.modules(torch.nn.Linear) is not None
    True
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .registry import REGISTRY


def _batched_positions(shape, start: int, stop: int | None = None) -> int:
    return math.prod(shape[start:stop]) if shape else 1


@REGISTRY.modules(nn.Linear)
def linear(ctx, node):
    mod = ctx.module(node)
    x = ctx.of(node.args[0]) or {}
    last = len(ctx.shape(node.args[0])) - 1
    rows = ctx.produce(node, mod.out_features)
    cols = ctx.consume(node, 0, last, fold=(node.target, "weight", 1))
    positions = _batched_positions(ctx.shape(node), 1, -1)
    ctx.param(node.target, "weight", {0: rows, 1: cols}, flops_per_entry=2 * positions)
    if cols is not None and ctx.position_gates:
        ctx.position_gate(node, 0, last, cols, fold=(node.target, "weight", 1))
    if mod.bias is not None:
        ctx.param(node.target, "bias", {0: rows})
    out = {d: lab for d, lab in x.items() if d != last}
    out[last] = rows
    return out


@REGISTRY.functions(F.linear)
def functional_linear(ctx, node):
    """``F.linear(x, self.weight, self.bias)`` with registered parameters."""
    weight, bias = ctx.arg(node, 1, "weight"), ctx.arg(node, 2, "bias")
    if getattr(weight, "op", None) != "get_attr" or (bias is not None and bias.op != "get_attr"):
        ctx.pin_inputs(node, f"{node.name}: linear with a computed weight")
        return {}
    x = ctx.of(node.args[0]) or {}
    last = len(ctx.shape(node.args[0])) - 1
    rows = ctx.produce(node, ctx.shape(weight)[0], key=weight.target)
    cols = ctx.consume(node, 0, last, fold=("", weight.target, 1))
    positions = _batched_positions(ctx.shape(node), 1, -1)
    ctx.param("", weight.target, {0: rows, 1: cols}, flops_per_entry=2 * positions)
    if bias is not None:
        ctx.param("", bias.target, {0: rows})
    out = {d: lab for d, lab in x.items() if d != last}
    out[last] = rows
    return out


def _pin_spatial(ctx, node, x: dict, channel_dim: int = 1) -> None:
    for d, lab in x.items():
        if d != channel_dim:
            ctx.pin(lab, f"{node.target}: a spatial dim carries channels")


@REGISTRY.modules(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv(ctx, node):
    mod = ctx.module(node)
    x = ctx.of(node.args[0]) or {}
    _pin_spatial(ctx, node, x)
    positions = _batched_positions(ctx.shape(node), 2)
    if mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels:
        return _depthwise(ctx, node, mod, x, positions)
    rows = ctx.produce(node, mod.out_channels)
    if mod.groups == 1:
        cols = ctx.consume(node, 0, 1, fold=(node.target, "weight", 1))
    else:
        cols = None
        reason = f"{node.target}: grouped convolution (groups={mod.groups})"
        ctx.pin(x.get(1), reason)
        ctx.pin(rows, reason)
    ctx.param(node.target, "weight", {0: rows, 1: cols}, flops_per_entry=2 * positions)
    if mod.bias is not None:
        ctx.param(node.target, "bias", {0: rows})
    return {1: rows}


def _depthwise(ctx, node, mod, x, positions):
    """A depthwise conv maps channel c to channel c: a follower of its input's channels."""
    channels = x.get(1)
    ctx.param(node.target, "weight", {0: channels}, flops_per_entry=2 * positions)
    if mod.bias is not None:
        ctx.param(node.target, "bias", {0: channels})
    return {1: channels} if channels is not None else {}


@REGISTRY.modules(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose(ctx, node):
    mod = ctx.module(node)
    x = ctx.of(node.args[0]) or {}
    _pin_spatial(ctx, node, x)
    rows = ctx.produce(node, mod.out_channels)
    positions = _batched_positions(ctx.shape(node.args[0]), 2)
    if mod.groups == 1 and len(node.args) == 1 and not node.kwargs:
        cols = ctx.consume(node, 0, 1, fold=(node.target, "weight", 0))
    else:
        cols = None
        reason = f"{node.target}: grouped transposed convolution or explicit output_size"
        ctx.pin(x.get(1), reason)
        ctx.pin(rows, reason)
    # With groups > 1 the weight's dim 1 holds out_channels / groups: leave it whole.
    weight_out = rows if mod.groups == 1 else None
    ctx.param(node.target, "weight", {0: cols, 1: weight_out}, flops_per_entry=2 * positions)
    if mod.bias is not None:
        ctx.param(node.target, "bias", {0: rows})
    return {1: rows}


@REGISTRY.modules(nn.Embedding)
def embedding(ctx, node):
    mod = ctx.module(node)
    ctx.pin_value(node.args[0], f"{node.target}: embedding indices")
    cols = ctx.produce(node, mod.embedding_dim)
    ctx.param(node.target, "weight", {1: cols})
    return {len(ctx.shape(node)) - 1: cols}


# Attributes that describe a layer's size, recomputed after extraction from the
# kept positions of a labeled weight dim, or ("input", d) of the module input.
# ("depthwise", d) sets ``groups`` to the new input size only for depthwise layers.
# Unlabeled dims leave the attribute as it is.
_CONV_SIZES = {"groups": ("depthwise", 1), "in_channels": ("input", 1),
               "out_channels": ("weight", 0)}
SIZE_ATTRIBUTES = {
    nn.Linear: {"in_features": ("weight", 1), "out_features": ("weight", 0)},
    nn.Conv1d: _CONV_SIZES,
    nn.Conv2d: _CONV_SIZES,
    nn.Conv3d: _CONV_SIZES,
    nn.ConvTranspose1d: {"in_channels": ("input", 1), "out_channels": ("weight", 1)},
    nn.ConvTranspose2d: {"in_channels": ("input", 1), "out_channels": ("weight", 1)},
    nn.ConvTranspose3d: {"in_channels": ("input", 1), "out_channels": ("weight", 1)},
    nn.Embedding: {"embedding_dim": ("weight", 1)},
}
