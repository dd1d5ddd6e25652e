"""Rules for layers with weights: the producers and consumers of channels.

``aten.linear`` reads its input's last dim through weight columns and creates
its output features; ``aten.conv*d`` does the same on dim 1 (a depthwise conv
follows its input's channels; other grouped convolutions prune the same
positions in every group);
``aten.conv_transpose*d`` keeps its weight as ``(in, out, ...)``;
``aten.embedding`` creates its embedding columns from integer inputs. The
weights must be parameters the graph reads (``get_attr``) or be computed from
parameters alone (:mod:`lumos_fx.rules.computed_weights`); a weight computed
from the input pins the channels. Channel spaces are named after the module
owning the weight.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> REGISTRY.find(torch.ops.aten.conv2d.default) is not None
    True
"""
from __future__ import annotations

import math

from .categorical import feature_of, gate_table
from .computed_weights import computed_weight
from .context import split_path
from .heads import mark_row_slice, packed_rows
from .registry import REGISTRY, aten, packets


def _batched_positions(shape, start: int, stop: int | None = None) -> int:
    return math.prod(shape[start:stop]) if shape else 1


def _weights(ctx, node, weight_index: int = 1, bias_index: int = 2):
    """``(weight path, bias path)``, or None when the layer computes its weights from its
    input (a weight computed from parameters alone is sliced as computed: see
    :mod:`lumos_fx.rules.computed_weights`)."""
    weight_node = ctx.arg(node, weight_index, "weight")
    weight = (ctx.weight_in_place(weight_node)
              or computed_weight(ctx, node, weight_node, "weight"))
    bias_node = ctx.arg(node, bias_index, "bias")
    bias = ctx.weight_in_place(bias_node) or computed_weight(ctx, node, bias_node, "bias")
    if weight is None or (bias_node is not None and bias is None):
        ctx.pin_inputs(node, f"{node.name}: {node.target} with a computed weight")
        return None
    return weight, bias


def _produce(ctx, node, weight: str, size: int, dim: int = 0, by_caller: bool = False):
    """The channels along ``dim`` of ``weight``: one set per weight and dim, so a weight
    shared by two layers gives both the same channels, and a table tied to an output
    layer (an embedding's columns, a decoder's rows) gives each dim its own. Named after
    the weight's module, or ``by_caller`` the module that calls the op (a tied table has
    one path, often the decoder's, but the embedding calls it)."""
    owner, _ = split_path(weight)
    stack = (node.meta.get("nn_module_stack") or {}) if by_caller else {}
    caller = next(reversed(stack.values()))[0] if stack else ""
    return ctx.produce(node, size, key=f"{weight}:{dim}", name=caller or owner or weight)


@REGISTRY.ops(aten.linear.default)
def linear(ctx, node):
    """A linear layer; its weight may also be rows of a packed weight (the in_proj_weight
    of ``nn.MultiheadAttention`` split into query and key/value rows): the rows it reads
    are then its slice of the packed weight's channels (:func:`heads.packed_rows`)."""
    packed = packed_rows(ctx, node)
    paths = packed[:2] if packed else _weights(ctx, node)
    if paths is None:
        return {}
    weight, bias = paths
    x = ctx.of(node.args[0]) or {}
    last = len(ctx.shape(node.args[0])) - 1
    rows = _produce(ctx, node, weight, packed[5] if packed else ctx.shape(node.args[1])[0])
    used = rows[packed[2]:packed[3]] if packed else rows
    for found in packed[4] if packed else ():
        mark_row_slice(found, rows)
    fold = (*split_path(weight), 1)
    # a slice of a packed weight is a view a module must not be handed (no_grad views
    # of a parameter break torch's module tracker): gate the activation instead
    cols = ctx.consume(node, 0, last, fold=fold, weight_arg=None if packed else 1)
    if cols is None and x.get(last) is None:      # learned queries read from a parameter
        read = ctx.read_parameter_channels(node, node.args[0], last, ctx.shape(node.args[0])[last])
        cols = read if read is None else ctx.consume_labels(
            node, 0, last, read, fold=fold, weight_arg=None if packed else 1)
    positions = _batched_positions(ctx.shape(node), 1, -1)
    ctx.param(weight, {0: rows, 1: cols}, flops_per_entry=2 * positions * len(used) / len(rows))
    if cols is not None and ctx.position_gates:
        ctx.position_gate(node, 0, last, cols, fold=fold)
    if bias is not None:
        ctx.param(bias, {0: rows})
    out = {d: lab for d, lab in x.items() if d != last}
    out[last] = used
    return out


def _pin_spatial(ctx, node, x: dict, channel_dim: int = 1) -> None:
    for d, lab in x.items():
        if d != channel_dim:
            ctx.pin(lab, f"{node.name}: a spatial dim carries channels")


def _groups(node, index: int) -> int:
    value = node.args[index] if len(node.args) > index else node.kwargs.get("groups", 1)
    return int(value)


@REGISTRY.ops(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
              aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding)
def conv(ctx, node):
    paths = _weights(ctx, node)
    if paths is None:
        return {}
    weight, bias = paths
    x = ctx.of(node.args[0]) or {}
    _pin_spatial(ctx, node, x)
    positions = _batched_positions(ctx.shape(node), 2)
    w_shape = ctx.shape(node.args[1])
    groups = _groups(node, 6)
    in_channels = ctx.shape(node.args[0])[1]
    if groups > 1 and groups == in_channels == w_shape[0]:
        if x.get(1) is not None:   # `groups` follows the kept channel count
            node.meta.setdefault("lumos", {}).update(codegen="groups", groups=x[1])
        return _depthwise(ctx, weight, bias, x, positions)
    rows = _produce(ctx, node, weight, w_shape[0])
    if groups == 1:
        cols = ctx.consume(node, 0, 1, fold=(*split_path(weight), 1), weight_arg=1)
    else:
        cols = _equal_groups(ctx, node, x.get(1), rows, groups)
    ctx.param(weight, {0: rows, 1: cols}, flops_per_entry=2 * positions)
    if bias is not None:
        ctx.param(bias, {0: rows})
    return {1: rows}


def _equal_groups(ctx, node, inputs, rows, groups: int):
    """A grouped convolution keeps ``groups`` equal groups: channel ``k`` of every group
    lives or dies together (input and output side), so each group keeps the same
    positions and ``groups`` stays as it is. The gate scales the input activation (the
    weight holds one group's worth of columns); returns the labels of the weight's
    input dim (one group's positions)."""
    reason = f"{node.name}: grouped convolution keeps its groups equal"
    for labels in (inputs, rows):
        if labels is not None:
            blocks = labels.reshape(groups, -1)
            for other in blocks[1:]:
                ctx.unify(blocks[0], other, reason)
    if inputs is None:
        return None
    ctx.consume(node, 0, 1)
    return inputs.reshape(groups, -1)[0].copy()


def _depthwise(ctx, weight, bias, x, positions):
    """A depthwise conv maps channel c to channel c: a follower of its input's channels."""
    channels = x.get(1)
    ctx.param(weight, {0: channels}, flops_per_entry=2 * positions)
    if bias is not None:
        ctx.param(bias, {0: channels})
    return {1: channels} if channels is not None else {}


@REGISTRY.ops(*packets("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"))
def conv_transpose(ctx, node):
    paths = _weights(ctx, node)
    if paths is None:
        return {}
    weight, bias = paths
    x = ctx.of(node.args[0]) or {}
    _pin_spatial(ctx, node, x)
    groups = _groups(node, 6)
    w_shape = ctx.shape(node.args[1])
    rows = _produce(ctx, node, weight, w_shape[1] * groups, dim=1)
    positions = _batched_positions(ctx.shape(node.args[0]), 2)
    if groups == 1:
        cols = ctx.consume(node, 0, 1, fold=(*split_path(weight), 0), weight_arg=1)
    else:
        cols = None
        reason = f"{node.name}: grouped transposed convolution"
        ctx.pin(x.get(1), reason)
        ctx.pin(rows, reason)
    # With groups > 1 the weight's dim 1 holds out_channels / groups: leave it whole.
    ctx.param(weight, {0: cols, 1: rows if groups == 1 else None},
              flops_per_entry=2 * positions)
    if bias is not None:
        ctx.param(bias, {0: rows})
    return {1: rows}


@REGISTRY.ops(aten.embedding.default)
def embedding(ctx, node):
    weight = ctx.attr(node.args[0])
    if weight is None:
        ctx.pin_inputs(node, f"{node.name}: embedding with a computed table")
        return {}
    ctx.pin_value(node.args[1], f"{node.name}: embedding indices")
    cols = _produce(ctx, node, weight, ctx.shape(node.args[0])[1], dim=1, by_caller=True)
    atom = feature_of(node.args[1])
    rows = gate_table(ctx, node, weight, atom) if atom is not None else None
    ctx.param(weight, {0: rows, 1: cols})
    return {len(ctx.shape(node)) - 1: cols}


@REGISTRY.ops(aten.prelu.default, aten._prelu_kernel.default)
def prelu(ctx, node):
    x = ctx.of(node.args[0]) or {}
    weight = ctx.attr(node.args[1])
    if ctx.shape(node.args[1]) != (1,):
        if weight is None:
            ctx.pin(x.get(1), f"{node.name}: prelu with a computed weight")
        else:
            ctx.param(weight, {0: x.get(1)})
    return x
