"""Build channel groups: run every op's rule over the captured graphs.

Both captured graphs (eval first, then train) feed one
:class:`~lumos_fx.channels.ChannelGraph`: producers are keyed by their weight,
so a layer's channels are the same atoms in both, and whatever either graph
unifies or pins holds for both. Model inputs with a floating dtype get a
feature space on the dim their first layer reads as channels (see
:func:`feature_dim`), or the dim ``input_dims`` names, or none. Each node's rule
maps its inputs' label arrays to its output's; an op with no rule pins every
channel it reads. Model outputs are pinned. The result is a :class:`GroupPlan`;
each node's labels are also left in ``node.meta["lumos"]["labels"]``.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lumos_fx.capture import capture
    >>> from lumos_fx.passes.shape_prop import propagate_shapes
    >>> from lumos_fx.passes.build_groups import build_groups
    >>> x = torch.randn(4, 3)
    >>> graphs = capture(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), (x,))
    >>> for gm in graphs.values():
    ...     propagate_shapes(gm, (x,))
    >>> plan = build_groups(graphs)
    >>> [(g.name, g.size, g.pinned) for g in plan.channels.groups()]
    [('input', 3, None), ('0', 8, None), ('2', 1, 'model output')]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from torch import fx

from ..channels import ChannelGraph, Labels
from ..rules import REGISTRY
from ..rules.categorical import is_categorical_input
from ..rules.context import ConsumerUse, ParamSpec, RuleContext
from .param_reads import pin_unaccounted_reads
from ..rules.elementwise import unary
from ..rules.param_views import permuted_dims
from ..rules.shape import ChannelCount


@dataclass
class GroupPlan:
    """Everything later passes need to know about the channel groups."""

    channels: ChannelGraph
    params: dict[str, ParamSpec]
    consumers: list[ConsumerUse]
    inputs: dict[str, tuple[int, Labels]] = field(default_factory=dict)
    categorical: set[str] = field(default_factory=set)   # inputs read as embedding indices


def describe(node: fx.Node) -> str:
    """``aten.conv2d.default (node conv2d_1, in module 'encoder.0')``."""
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()), ("", ""))[0] if stack else ""
    where = f", in module {owner!r}" if owner else ""
    return f"{node.target} (node {node.name}{where})"


def _real_input(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return hasattr(meta, "shape") and meta.dtype.is_floating_point and len(meta.shape) >= 2


_LAST_DIM_READERS = ("linear", "matmul", "mm", "addmm", "bmm", "layer_norm", "embedding_bag",
                     "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell",
                     "rnn_tanh_cell", "rnn_relu_cell", "cdist", "_cdist_forward")
_DIM_ONE_READERS = ("conv", "batch_norm", "instance_norm", "group_norm")


def feature_dim(node: fx.Node) -> int:
    """The dim of an input the model reads as channels: followed through ops that keep
    dims in place (activations, dropout, ``cat`` with other tensors), move them
    (``transpose``, ``permute``) or
    flatten the ones before the last (``x.reshape(-1, F)``) to the first op that reads
    one dim, such as a linear layer or a recurrent one (the last dim: the ``F`` of
    ``(B, T, F)``) or a convolution (dim 1); dim 1 when no such reader is found."""
    rank = len(node.meta["tensor_meta"].shape)
    seen, frontier = set(), [(node, list(range(rank)))]     # (tensor, its dims' input dims)
    while frontier:
        current, dims = frontier.pop(0)
        for user in current.users:
            if user in seen or user.op != "call_function":
                continue
            seen.add(user)
            packet = getattr(user.target, "overloadpacket", None)
            name = getattr(packet, "__name__", "")
            # the operand a reader reads its channels from: addmm(bias, input, weight)
            reads = user.args[1 if name == "addmm" else 0] is current
            if reads and name in _LAST_DIM_READERS:
                read = dims[-1]
            elif reads and name.startswith(_DIM_ONE_READERS):
                read = dims[1] if len(dims) > 1 else None
            else:
                moved = _moved_dims(user, name, dims, current)
                if moved is not None:
                    frontier.append((user, moved))
                continue
            return read if read is not None else 1
    return 1


def _moved_dims(user: fx.Node, name: str, dims: list, current: fx.Node) -> list | None:
    """Where the input's dims are in ``user``'s output, or None when it is not followed."""
    meta = user.meta.get("tensor_meta")
    shape = tuple(getattr(meta, "shape", ()) or ())
    if not shape:
        return None
    if REGISTRY.find(user.target) in (REGISTRY.pointwise, unary):
        return dims if len(shape) == len(dims) else None
    if name in ("cat", "concat", "concatenate") and isinstance(user.args[0], (list, tuple)) \
            and current in user.args[0]:
        return dims if len(shape) == len(dims) else None   # joined with others, dims in place
    if user.args[0] is not current:
        return None
    moved = permuted_dims(name, user.args, dims)
    if moved is not None:
        return moved
    if name in ("view", "reshape", "_unsafe_view", "flatten"):
        source = getattr(user.args[0].meta.get("tensor_meta"), "shape", None)
        if source is not None and len(source) and shape[-1] == source[-1]:
            return [None] * (len(shape) - 1) + [dims[-1]]      # the last dim stays whole
    return None


def _input_space(ctx: RuleContext, node: fx.Node, input_dims: dict):
    categorical = is_categorical_input(node)
    if not (categorical or _real_input(node)):
        return None
    dim = input_dims.get(node.target, "auto")
    if dim is None:
        return None
    rank = len(node.meta["tensor_meta"].shape)
    if categorical:
        dim = 1
    dim = feature_dim(node) if dim == "auto" else dim % rank
    size = int(node.meta["tensor_meta"].shape[dim])
    return dim, ctx.produce(node, size, kind="categorical" if categorical else "input",
                            key=f"input:{node.target}", name=str(node.target))


def build_groups(graphs: dict[bool, fx.GraphModule], input_dims: dict | None = None) -> GroupPlan:
    """Channel groups of the captured graphs ``{training: GraphModule}``."""
    ctx = RuleContext(graphs[False], ChannelGraph())
    inputs = {}
    for training in sorted(graphs):          # eval first: it counts the FLOPs
        ctx.for_graph(graphs[training], training)
        for node in graphs[training].graph.nodes:
            ctx.node = node
            out = _labels_of(ctx, node, input_dims or {}, inputs)
            ctx.labels[node] = out
            node.meta.setdefault("lumos", {})["labels"] = out
    ctx.node = None
    if len(graphs) > 1:
        ctx.pin_one_sided_weights()
    for training in sorted(graphs):
        pin_unaccounted_reads(ctx.for_graph(graphs[training], training))
    if len(graphs) > 1:      # the whole reads stored above, when one graph only has them
        ctx.pin_one_sided_weights()
    for group in ctx.channels.groups():
        if all(space.kind == "broadcast" for space in group.spaces):
            for space in group.spaces:
                ctx.channels.pin(np.arange(space.start, space.start + space.size),
                                 "copies of one entry (expand): nothing to prune")
    categorical = {name for name, (_, labels) in inputs.items()
                   if len(labels) and ctx.channels.space_of(int(labels[0])).kind == "categorical"}
    return GroupPlan(ctx.channels, ctx.params, ctx.consumers, inputs, categorical)


def _labels_of(ctx: RuleContext, node: fx.Node, input_dims: dict, inputs: dict):
    if node.op == "placeholder":
        space = inputs.get(node.target) or _input_space(ctx, node, input_dims)
        if space is None:
            return {}
        inputs[node.target] = space
        return {space[0]: space[1]}
    if node.op == "output":
        ctx.pin_inputs(node, "model output")
        return None
    if node.op != "call_function":
        return None
    if not node.users and not node.is_impure():
        return None      # dead: read only for its shape (BART's embeds[:, :, -1]), pins nothing
    rule = REGISTRY.lookup(node)
    if not getattr(rule, "reads_sizes", False):
        for value in node.all_input_nodes:
            if isinstance(ctx.of(value), ChannelCount):
                ctx.pin_value(value, f"{node.name}: computes with a channel count the program read")
    if rule is None:
        ctx.pin_inputs(node, f"no rule for {describe(node)}")
        return None
    return rule(ctx, node)


__all__ = ["GroupPlan", "build_groups", "describe", "feature_dim"]
