"""Rules for elementwise ops: activations, dropout, arithmetic, broadcasting.

A unary elementwise op keeps every channel where it is. A binary (or n-ary)
op aligns its operands by broadcasting and *unifies* the channels that meet
at the same position (a residual ``add`` ties the two branches' channels
together). A parameter or buffer operand (``x * self.scale``) is a follower
and is sliced along; any other operand that is not labeled where the result
is pins those channels.

Example::

    >>> import operator
    >>> from lumos_fx.rules import REGISTRY
    >>> REGISTRY.has_function(operator.add) and REGISTRY.has_method("sigmoid")
    True
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .context import broadcast_dims
from .registry import REGISTRY

_UNARY_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.SELU,
    nn.CELU, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Tanhshrink,
    nn.Softsign, nn.LogSigmoid, nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_UNARY_NAMES = (
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leaky_relu", "selu", "celu",
    "softplus", "mish", "hardswish", "hardsigmoid", "hardtanh", "tanhshrink", "softsign",
    "logsigmoid", "softshrink", "hardshrink", "threshold", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "abs", "neg", "exp", "expm1", "log",
    "log1p", "sqrt", "rsqrt", "sin", "cos", "square", "reciprocal", "sign", "erf", "clamp",
    "clip", "clamp_min", "clamp_max", "nan_to_num", "relu_", "sigmoid_", "tanh_",
    "zeros_like", "ones_like", "empty_like", "rand_like", "randn_like", "full_like",
)
_PASSTHROUGH_METHODS = ("contiguous", "clone", "detach", "float", "double", "half", "bfloat16",
                        "to", "type_as", "cpu", "cuda", "requires_grad_")


def _functions(names):
    for space in (torch, F, torch.special):
        for name in names:
            fn = getattr(space, name, None)
            if callable(fn):
                yield fn


def unary(ctx, node):
    return ctx.of(node.args[0])


REGISTRY.add(unary, modules=_UNARY_MODULES, functions=tuple(_functions(_UNARY_NAMES)),
             methods=_UNARY_NAMES + _PASSTHROUGH_METHODS)


@REGISTRY.modules(nn.PReLU)
def prelu(ctx, node):
    x = ctx.of(node.args[0]) or {}
    if ctx.module(node).num_parameters > 1:
        ctx.param(node.target, "weight", {0: x.get(1)})
    return x


def elementwise(ctx, node):
    """Broadcast all tensor operands against each other and unify their channels."""
    operands = [a for a in (*node.args, *node.kwargs.values())
                if isinstance(a, fx.Node) and ctx.shape(a) is not None]
    out_shape = ctx.shape(node)
    if out_shape is None:
        ctx.pin_inputs(node, f"{node.format_node()}: non-tensor result")
        return None
    shapes = [ctx.shape(a) for a in operands]
    out = {}
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
            continue
        first = labeled[0]
        for lab in labeled[1:]:
            ctx.unify(first, lab, f"{node.name}: combined with a fixed channel")
        for a, od, shape in zip(operands, dims, shapes):
            if od is None or shape[od] == 1 or (ctx.of(a) or {}).get(od) is not None:
                continue
            if a.op == "get_attr":
                ctx.param("", a.target, {od: first})
            else:
                ctx.pin(first, f"{node.name}: combined with an unlabeled tensor {a.name}")
        out[d] = first
    return out


_BINARY_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.pow, torch.maximum, torch.minimum, torch.where, torch.lerp,
    torch.addcmul, torch.addcdiv, torch.fmax, torch.fmin, torch.atan2, torch.hypot,
)
_BINARY_METHODS = ("add", "sub", "mul", "div", "truediv", "pow", "add_", "sub_", "mul_", "div_",
                   "maximum", "minimum", "where", "lerp", "addcmul", "addcdiv", "masked_fill")
REGISTRY.add(elementwise, functions=_BINARY_FUNCTIONS, methods=_BINARY_METHODS)
# x.expand_as(other) broadcasts x to other's shape: its labels follow the same rule
REGISTRY.add(elementwise, methods=("expand_as",), functions=(torch.broadcast_to,))


@REGISTRY.functions(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
@REGISTRY.methods("softmax", "log_softmax")
def softmax(ctx, node):
    x = ctx.of(node.args[0]) or {}
    dim = ctx.arg(node, 1, "dim")
    rank = len(ctx.shape(node.args[0]))
    if dim is None or not isinstance(dim, int):
        ctx.pin_value(x, f"{node.name}: softmax over an unknown dim")
        return {}
    ctx.pin(x.get(dim % rank), f"{node.name}: softmax over the channel dim")
    return {d: lab for d, lab in x.items() if d != dim % rank}
