"""Capture PyG graph-level pooling with a dynamic number of graphs.

PyG's ``scatter`` sizes its output with ``int(index.max()) + 1`` when no size is
given (``global_add_pool(x, batch)``, aggregation modules). ``torch.export``
cannot keep a Python ``int`` of tensor data dynamic, so pooled models fail to
capture. While :func:`symbolic_graph_counts` is active (only during capture),
that size is ``index.max().item() + 1``: an unbacked symbolic size, the same
number at run time for any batch of graphs. Nothing changes when PyG is not
imported.

Example::

    >>> from lumos_fx.pyg_capture import symbolic_graph_counts
    >>> with symbolic_graph_counts():
    ...     pass
"""
from __future__ import annotations

import contextlib
import functools
import sys

import torch


def _symbolic_size(scatter):
    @functools.wraps(scatter)
    def wrapper(src, index, dim=0, dim_size=None, reduce="sum"):
        if dim_size is None and torch.compiler.is_compiling() and index.numel() > 0:
            dim_size = index.max().item() + 1
        return scatter(src, index, dim, dim_size, reduce)
    return wrapper


@contextlib.contextmanager
def symbolic_graph_counts():
    """Point every PyG module's ``scatter`` at the symbolic-size wrapper, then restore."""
    module = sys.modules.get("torch_geometric.utils._scatter")
    original = getattr(module, "scatter", None)
    if original is None:
        yield
        return
    wrapper = _symbolic_size(original)
    patched = [(m, name) for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("torch_geometric")
               for name in ("scatter",) if getattr(m, name, None) is original]
    try:
        for m, name in patched:
            setattr(m, name, wrapper)
        yield
    finally:
        for m, name in patched:
            setattr(m, name, original)
