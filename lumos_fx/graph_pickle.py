"""Pickle an fx graph with its ``node.meta``: what ``GraphModule`` pickling loses.

``torch.save`` of a ``GraphModule`` keeps only its generated code and re-traces it
on load, so ``node.meta`` (shapes, channel labels, provenance) is gone and nodes
may be renamed. lumos_fx's passes need both, so a gated model pickles its graphs
as rows ``(op, name, target, args, kwargs, meta)``; aten op targets (not
picklable themselves) travel as their qualified names.

Example::

    >>> import pickle, torch
    >>> from lumos_fx.graph_pickle import graph_from_rows, graph_to_rows
    >>> from lumos_fx.capture import capture
    >>> gm = capture(torch.nn.Sequential(torch.nn.ReLU()), (torch.randn(2, 3),))[False]
    >>> relu = next(n for n in gm.graph.nodes if n.op == "call_function")
    >>> relu.meta = {"note": 1}
    >>> rows = graph_to_rows(gm.graph, meta_keys=("note",))
    >>> graph = graph_from_rows(pickle.loads(pickle.dumps(rows)))
    >>> [(n.name, str(n.target), n.meta) for n in graph.nodes if n.op == "call_function"]
    [('relu', 'aten.relu.default', {'note': 1})]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata


@dataclass(frozen=True)
class _NodeRef:
    name: str


@dataclass(frozen=True)
class _OpRef:
    namespace: str
    op: str
    overload: str

    def resolve(self):
        return getattr(getattr(getattr(torch.ops, self.namespace), self.op), self.overload)


def _target_ref(target):
    if isinstance(target, torch._ops.OpOverload):
        namespace, op = target._schema.name.split("::")
        return _OpRef(namespace, op, target._overloadname)
    return target


def _portable(value):
    """``TensorMetadata`` without its ``memory_format`` (torch.save's pickle protocol
    cannot store one); tuples of them item by item."""
    if isinstance(value, TensorMetadata):
        return value._replace(memory_format=None)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_portable(v) for v in value)
    return value


def graph_to_rows(graph: fx.Graph, meta_keys: tuple[str, ...] | None = None) -> dict:
    """A picklable description of ``graph``: its nodes and the ``meta_keys`` entries of
    their meta (all of it by default; the values must be picklable)."""
    rows = []
    for node in graph.nodes:
        ref = lambda n: _NodeRef(n.name)  # noqa: E731
        rows.append((node.op, node.name, _target_ref(node.target),
                     fx.node.map_arg(node.args, ref), fx.node.map_arg(node.kwargs, ref),
                     {k: _portable(v) for k, v in node.meta.items()
                      if meta_keys is None or k in meta_keys}))
    return {"rows": rows, "codegen": graph._codegen}


def graph_from_rows(state: dict) -> fx.Graph:
    """Rebuild the graph :func:`graph_to_rows` described, names and meta included."""
    graph = fx.Graph()
    graph._codegen = state["codegen"]
    env: dict[str, fx.Node] = {}

    def load(value):
        if isinstance(value, _NodeRef):
            return env[value.name]
        if isinstance(value, (list, tuple)):
            loaded = [load(v) for v in value]
            return type(value)(loaded) if isinstance(value, list) else tuple(loaded)
        if isinstance(value, dict):
            return {k: load(v) for k, v in value.items()}
        if isinstance(value, slice):
            return slice(load(value.start), load(value.stop), load(value.step))
        return value

    for op, name, target, args, kwargs, meta in state["rows"]:
        if isinstance(target, _OpRef):
            target = target.resolve()
        node = graph.create_node(op, target, load(args), load(kwargs), name=name)
        node.meta = meta
        env[name] = node
    return graph
