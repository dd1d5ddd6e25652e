"""Build channel groups: run every op's rule over the traced graph.

Model inputs with a floating dtype get a feature space (dim 1 by default:
features of a ``(N, F)`` table, channels of an ``(N, C, ...)`` field; choose
another dim, or none, with ``input_dims``). Each node's rule maps its inputs'
label arrays to its output's; an op with no rule pins every channel it reads.
Model outputs are pinned. The result is a :class:`GroupPlan`; each node's
labels are also left in ``node.meta["lumos"]["labels"]``.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lumos_fx.passes.shape_prop import propagate_shapes
    >>> from lumos_fx.passes.build_groups import build_groups
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    >>> propagate_shapes(gm, (torch.randn(4, 3),))
    >>> plan = build_groups(gm)
    >>> [(g.name, g.size, g.pinned) for g in plan.channels.groups()]
    [('input', 3, None), ('0', 8, None), ('2', 1, 'model output')]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from ..channels import ChannelGraph, Labels
from ..rules import REGISTRY
from ..rules.context import ConsumerUse, ParamSpec, RuleContext
from ..rules.shape import ChannelCount


@dataclass
class GroupPlan:
    """Everything later passes need to know about the channel groups."""

    channels: ChannelGraph
    params: dict[str, ParamSpec]
    consumers: list[ConsumerUse]
    inputs: dict[str, tuple[int, Labels]] = field(default_factory=dict)


def describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    target = node.target if isinstance(node.target, str) else getattr(
        node.target, "__qualname__", str(node.target))
    kind = "method" if node.op == "call_method" else "function"
    return f"{kind} {target} (node {node.name})"


def _input_space(ctx: RuleContext, node: fx.Node, input_dims: dict) -> dict:
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape") or not meta.dtype.is_floating_point or len(meta.shape) < 2:
        return {}
    dim = input_dims.get(node.target, 1)
    if dim is None:
        return {}
    dim %= len(meta.shape)
    return {dim: ctx.channels.new_space(str(node.target), int(meta.shape[dim]), kind="input")}


def build_groups(gm: fx.GraphModule, input_dims: dict | None = None) -> GroupPlan:
    ctx = RuleContext(gm, ChannelGraph())
    inputs = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            out = _input_space(ctx, node, input_dims or {})
            if out:
                inputs[node.target] = next(iter(out.items()))
        elif node.op == "get_attr":
            out = None
        elif node.op == "output":
            ctx.pin_inputs(node, "model output")
            out = None
        else:
            rule = REGISTRY.lookup(node, gm)
            if not getattr(rule, "reads_sizes", False):
                for value in node.all_input_nodes:
                    if isinstance(ctx.of(value), ChannelCount):
                        ctx.pin_value(value, f"{node.name}: computes with a channel count "
                                             f"the program read")
            if rule is None:
                ctx.pin_inputs(node, f"no rule for {describe(node)}")
                out = None
            else:
                out = rule(ctx, node)
        ctx.labels[node] = out
        node.meta.setdefault("lumos", {})["labels"] = out
    return GroupPlan(ctx.channels, ctx.params, ctx.consumers, inputs)


__all__ = ["GroupPlan", "build_groups", "describe", "torch"]
