"""Capture PyG code that counts graphs or nodes from tensor data.

PyG's ``scatter`` sizes its output with ``int(index.max()) + 1`` when no size is
given (``global_add_pool(x, batch)``, aggregation modules). ``torch.export``
cannot keep a Python ``int`` of tensor data dynamic, so pooled models fail to
capture. While :func:`symbolic_graph_counts` is active (only during capture),
that size is ``index.max().item() + 1``: an unbacked symbolic size, the same
number at run time for any batch of graphs. PyG modules whose ``forward`` takes
``batch`` and ``batch_size`` (``GraphNorm``, ``InstanceNorm``, graph-mode
``LayerNorm``, ...) compute ``int(batch.max()) + 1`` themselves when no size is
given, and so do aggregation modules (``aggr.SumAggregation()(x, batch)``, SchNet's
readout); during capture they get the same symbolic size instead. So does
``maybe_num_nodes(edge_index)`` without a count (EGConv's self-loops), and
RGCNConv's segment-matmul heuristic, which takes ``int()`` of an edge count, is
switched off (captured code never takes that branch). Nothing changes when PyG is
not imported.

Example::

    >>> from lumos_fx.pyg_capture import symbolic_graph_counts
    >>> with symbolic_graph_counts():
    ...     pass
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys

import torch


def _count(index: torch.Tensor):
    """``int(index.max()) + 1`` (0 when empty) as a symbolic size, without branching on
    ``index.numel()``: after a node-dropping pooling that count is itself symbolic."""
    flat = index.reshape(-1)
    return torch.cat([flat, flat.new_full((1,), -1)]).max().item() + 1


def _symbolic_size(scatter):
    @functools.wraps(scatter)
    def wrapper(src, index, dim=0, dim_size=None, reduce="sum"):
        if dim_size is None and torch.compiler.is_compiling():
            dim_size = _count(index)
        return scatter(src, index, dim, dim_size, reduce)
    return wrapper


def _symbolic_num_nodes(maybe_num_nodes):
    """``maybe_num_nodes(edge_index)`` (no count given: EGConv's self-loops, ``to_undirected``)
    as the symbolic ``edge_index.max() + 1`` instead of a Python ``int`` of it."""
    @functools.wraps(maybe_num_nodes)
    def wrapper(edge_index, num_nodes=None):
        edge_index_class = getattr(sys.modules.get("torch_geometric"), "EdgeIndex", ())
        if num_nodes is None and torch.compiler.is_compiling() and \
                isinstance(edge_index, torch.Tensor) and edge_index.layout == torch.strided \
                and not isinstance(edge_index, edge_index_class):
            return _count(edge_index)
        return maybe_num_nodes(edge_index, num_nodes)
    return wrapper


def _symbolic_batch_size(forward):
    names = list(inspect.signature(forward).parameters)
    position = names.index("batch_size")

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        batch = kwargs.get("batch", args[names.index("batch")] if len(args) > names.index(
            "batch") else None)
        given = kwargs.get("batch_size", args[position] if len(args) > position else None)
        if given is None and batch is not None and torch.compiler.is_compiling() \
                and isinstance(batch, torch.Tensor):
            args = args[:position]
            kwargs = {**kwargs, "batch_size": _count(batch)}
        return forward(*args, **kwargs)
    return wrapper


def _symbolic_dim_size(call):
    """``Aggregation.__call__(x, index, ptr, dim_size, dim, ...)`` (``SumAggregation``,
    SchNet's readout) with the symbolic graph count for a missing ``dim_size``."""
    @functools.wraps(call)
    def wrapper(self, x, index=None, ptr=None, dim_size=None, *args, **kwargs):
        if dim_size is None and ptr is None and index is not None and \
                torch.compiler.is_compiling():
            dim_size = _count(index)
        return call(self, x, index, ptr, dim_size, *args, **kwargs)
    return wrapper


def _batch_size_modules() -> list[type]:
    """PyG module classes whose ``forward(..., batch, batch_size)`` sizes per-graph results."""
    classes = []
    for m in list(sys.modules.values()):
        if not getattr(m, "__name__", "").startswith("torch_geometric.nn"):
            continue
        for value in list(vars(m).values()):
            forward = vars(value).get("forward") if isinstance(value, type) else None
            if not (inspect.isfunction(forward) and issubclass(value, torch.nn.Module)):
                continue
            names = list(inspect.signature(forward).parameters)
            if "batch" in names and "batch_size" in names and value not in classes:
                classes.append(value)
    return classes


def _rebind(name: str, original, wrapper) -> list[tuple]:
    """``(module, name, original, wrapper)`` for every PyG module that imported ``original``."""
    return [(m, name, original, wrapper) for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("torch_geometric")
            and getattr(m, name, None) is original]


@contextlib.contextmanager
def symbolic_graph_counts():
    """Point every PyG module's ``scatter`` at the symbolic-size wrapper and give PyG
    modules that count graphs themselves the symbolic count, then restore."""
    module = sys.modules.get("torch_geometric.utils._scatter")
    original = getattr(module, "scatter", None)
    if original is None:
        yield
        return
    patched = _rebind("scatter", original, _symbolic_size(original))
    num_nodes = getattr(sys.modules.get("torch_geometric.utils.num_nodes"), "maybe_num_nodes", None)
    if num_nodes is not None:
        patched += _rebind("maybe_num_nodes", num_nodes, _symbolic_num_nodes(num_nodes))
    backend = sys.modules.get("torch_geometric.backend")
    if getattr(backend, "use_segment_matmul", False) is None:
        # RGCNConv's heuristic for it takes int() of a count; under capture it never
        # takes the segment-matmul branch anyway (that branch requires not is_compiling())
        patched.append((backend, "use_segment_matmul", None, False))
    patched += [(cls, "forward", vars(cls)["forward"], _symbolic_batch_size(vars(cls)["forward"]))
                for cls in _batch_size_modules()]
    aggregation = getattr(sys.modules.get("torch_geometric.nn.aggr.base"), "Aggregation", None)
    if aggregation is not None:
        call = vars(aggregation)["__call__"]
        patched.append((aggregation, "__call__", call, _symbolic_dim_size(call)))
    try:
        for owner, name, _, new in patched:
            setattr(owner, name, new)
        yield
    finally:
        for owner, name, old, _ in patched:
            setattr(owner, name, old)
