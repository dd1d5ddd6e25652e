"""Rules for elementwise ops: activations, dropout, arithmetic, broadcasting.

Every aten op tagged ``pointwise`` (``relu``, ``gelu``, ``add``, ``mul``,
``where``, their in-place forms, ...) aligns its tensor operands by
broadcasting and *unifies* the channels that meet at the same position (a
residual ``add`` ties the two branches' channels together). A parameter or
buffer operand (``x * self.scale``) is a follower and is sliced along; any
other operand that is not labeled where the result is pins those channels.
Dropout in all its forms and copies (``clone``, ``_to_copy``) keep every
channel where it is.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.elementwise import elementwise
    >>> REGISTRY.find(torch.ops.aten.add_.Tensor) is elementwise
    True
"""
from __future__ import annotations

from torch import fx

from .computed_weights import computed_weight
from .context import broadcast_dims
from .registry import REGISTRY, aten, packets


def unary(ctx, node):
    return ctx.of(node.args[0])


REGISTRY.add(unary, packets(
    "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout",
    "alpha_dropout_", "feature_alpha_dropout", "feature_alpha_dropout_", "native_dropout",
    "clone", "contiguous", "_to_copy", "to", "detach", "detach_", "alias", "lift_fresh_copy",
    "zeros_like", "ones_like", "empty_like", "rand_like", "randn_like", "full_like",
    "bernoulli", "bernoulli_", "rrelu", "rrelu_", "type_as", "_assert_tensor_metadata",
    # activations torch does not tag pointwise (MobileNetV3's hardswish, in-place forms)
    "hardswish", "hardswish_", "log_sigmoid", "gelu_", "relu6_", "mish_", "threshold_",
    # complex parts and conjugates keep every dim
    "real", "imag", "conj", "_conj", "conj_physical", "resolve_conj", "resolve_neg"))


def elementwise(ctx, node):
    """Broadcast all tensor operands against each other and unify their channels."""
    operands = [a for a in (*node.args, *node.kwargs.values())
                if isinstance(a, fx.Node) and ctx.shape(a) is not None]
    out_shape = ctx.shape(node)
    if out_shape is None:
        ctx.pin_inputs(node, f"{node.format_node()}: non-tensor result")
        return None
    shapes = [ctx.shape(a) for a in operands]
    out, followers = {}, {}     # followers: parameter path -> {its dim: labels}, one use
    for d, *dims in broadcast_dims(out_shape, *shapes):
        labeled = []
        for a, od, shape in zip(operands, dims, shapes):
            lab = (ctx.of(a) or {}).get(od) if od is not None else None
            if lab is None:
                continue
            if shape[od] != out_shape[d]:
                ctx.pin(lab, f"{node.name}: a channel dim is broadcast")
            else:
                labeled.append(lab)
        if not labeled:
            born = _parameter_dim(ctx, node, operands, dims, shapes, out_shape[d], followers)
            if born is not None:
                out[d] = born
            continue
        first = labeled[0]
        for lab in labeled[1:]:
            ctx.unify(first, lab, f"{node.name}: combined with a fixed channel")
        for a, od, shape in zip(operands, dims, shapes):
            if od is None or shape[od] == 1 or (ctx.of(a) or {}).get(od) is not None:
                continue
            behind = ctx.param_behind(a, od, out_shape[d])
            if behind is None:      # computed from parameters alone: stored at extraction
                computed = computed_weight(ctx, node, a, "constant", numbered=True)
                behind = None if computed is None else (computed, od)
            if behind is not None:
                followers.setdefault(behind[0], {})[behind[1]] = first
            else:
                ctx.pin(first, f"{node.name}: combined with an unlabeled tensor {a.name}")
        out[d] = first
    for path, labels in followers.items():   # all its dims at once: one use, not several
        ctx.param(path, labels)
    return out


def _parameter_dim(ctx, node, operands, dims, shapes, size, followers):
    """Labels for a dim that only a parameter has in full, every other operand being
    broadcast along it (Swin's per-head position bias plus a window mask of one head):
    the parameter dim's own channels, to be joined with what reads them (the heads)."""
    full = [(a, od) for a, od, shape in zip(operands, dims, shapes)
            if od is not None and shape[od] != 1]
    if len(full) != 1 or size < 2:
        return None
    behind = ctx.param_behind(*full[0], size)
    if behind is None:
        return None
    path, param_dim = behind
    labels = ctx.parameter_channels(node, path, param_dim, size)
    followers.setdefault(path, {})[param_dim] = labels
    return labels


REGISTRY.pointwise = elementwise
REGISTRY.add(elementwise, packets("expand_as", "masked_fill", "masked_fill_",
                                  "where", "maximum", "minimum", "lerp", "addcmul", "addcdiv",
                                  "rrelu_with_noise",
                                  # aliases torch does not tag pointwise (torch.multiply, ...)
                                  "multiply", "multiply_", "subtract", "subtract_", "divide",
                                  "divide_", "true_divide", "true_divide_", "floor_divide",
                                  "floor_divide_", "negative", "negative_", "absolute",
                                  "absolute_", "rsub", "greater", "less", "greater_equal",
                                  "less_equal", "not_equal", "fix", "arctan", "arcsin",
                                  "arccos", "arctanh", "arcsinh", "arccosh", "arctan2",
                                  "special_xlogy", "complex", "polar",
                                  # masks combined with & and | (a B-spline basis)
                                  "__and__", "__or__", "__iand__", "__ior__", "__irshift__"))
# torch.max(a, b) and torch.min(a, b) are elementwise overloads of the reductions' packets
REGISTRY.ops(aten.max.other, aten.min.other)(elementwise)


@REGISTRY.ops(*packets("softmax", "_softmax", "log_softmax", "_log_softmax"))
def softmax(ctx, node):
    x = ctx.of(node.args[0]) or {}
    dim = ctx.arg(node, 1, "dim")
    rank = len(ctx.shape(node.args[0]))
    if not isinstance(dim, int):
        ctx.pin_value(x, f"{node.name}: softmax over an unknown dim")
        return {}
    ctx.pin(x.get(dim % rank), f"{node.name}: softmax over the channel dim")
    return {d: lab for d, lab in x.items() if d != dim % rank}


# torch.max(a, b) / torch.min(a, b) are elementwise; their other overloads reduce
REGISTRY.add(elementwise, (aten.max.other, aten.min.other, aten.fmax.default, aten.fmin.default))


@REGISTRY.ops(aten.glu.default)
def glu(ctx, node):
    """``a * sigmoid(b)`` of the two halves of a dim: channel ``j`` of the result reads
    channels ``j`` and ``j + C/2``, which are then one channel."""
    x = dict(ctx.of(node.args[0]) or {})
    rank = len(ctx.shape(node.args[0]))
    dim = ctx.arg(node, 1, "dim", -1) % rank
    labels = x.get(dim)
    if labels is not None:
        half = len(labels) // 2
        ctx.unify(labels[:half], labels[half:], f"{node.name}: glu multiplies two halves")
        x[dim] = labels[:half]
    return x
