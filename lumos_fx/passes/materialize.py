"""Store each weight a layer computes from parameters alone as a plain parameter.

The first step of extraction for the weights of
:mod:`lumos_fx.rules.computed_weights` (``weight_norm``, a standardized weight):
the subgraph that computes one is evaluated once, on the trained parameters,
and its result becomes a parameter under the name the rule chose; the layer
reads that instead, and the rest of extraction folds gates into it and slices
it like any stored weight. The subgraph is dead afterwards and goes with the
dead code (and the parameters only it read with it).

Example::

    >>> import torch
    >>> from torch import fx
    >>> from lumos_fx.passes.materialize import evaluate
    >>> root = torch.nn.Linear(2, 2)
    >>> graph = fx.Graph()
    >>> doubled = graph.call_function(torch.mul, (graph.get_attr("weight"), 2.0))
    >>> torch.equal(evaluate(fx.GraphModule(root, graph), doubled), root.weight * 2)
    True
"""
from __future__ import annotations

import torch
from torch import fx, nn

from ..rules.context import lookup, split_path


def evaluate(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    """The value of ``node``, computed from ``gm``'s parameters and buffers (every node
    it depends on must be a ``get_attr`` or a call of a function)."""
    values: dict[fx.Node, object] = {}

    def value_of(n: fx.Node):
        if n not in values:
            if n.op == "get_attr":
                values[n] = lookup(gm, n.target)
            else:
                args = fx.node.map_arg(n.args, value_of)
                kwargs = fx.node.map_arg(n.kwargs, value_of)
                values[n] = n.target(*args, **kwargs)
        return values[n]
    with torch.no_grad():
        return value_of(node).detach().clone()


def materialize_weights(gm: fx.GraphModule, params) -> None:
    """Replace the node of every computed weight in ``params`` (``ParamSpec`` s) by a
    ``get_attr`` of a new parameter holding its value."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for spec in params.values():
        name = getattr(spec, "computed", None)
        if name is None or name not in nodes:
            continue
        node = nodes[name]
        owner, attribute = split_path(spec.path)
        module = _module_at(gm, owner)
        value = evaluate(gm, node)
        if getattr(spec, "constant", False):      # from buffers alone: a buffer again
            module.register_buffer(attribute, value)
        else:
            module.register_parameter(attribute, nn.Parameter(value))
        with gm.graph.inserting_before(node):
            stored = gm.graph.get_attr(spec.path)
        node.replace_all_uses_with(stored)


def _module_at(root: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``, created (empty) where it is missing."""
    module = root
    for part in filter(None, path.split(".")):
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    return module
