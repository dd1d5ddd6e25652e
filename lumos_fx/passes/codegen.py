"""Rewrite literals in the graph that depended on a pruned size.

Rules mark a node with ``node.meta["lumos"]["codegen"] = KIND``; after the
parameters are sliced, :func:`rewrite_literals` fixes each marked node so the
pruned model runs for any batch size without user patches:

* ``shape_args`` - ``view``/``reshape`` sizes on shrunk dims become the kept counts;
* ``split`` - ``split``/``chunk``/``tensor_split`` along a channel dim become
  ``split`` with each piece's kept count;
* ``slice`` - ``x[:, a:b]`` on a channel dim becomes the kept positions' bounds;
* ``mean`` - a ``mean`` over a channel dim becomes ``sum / original_count``,
  which is exact because closed channels are gated to zero.

Example::

    >>> import numpy as np
    >>> from lumos_fx.passes.codegen import kept_before
    >>> kept_before(np.array([0, 2, 3]), 3)   # positions 0, 2 of the first 3 survive
    2
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx


def kept_before(kept: np.ndarray, position: int) -> int:
    """How many kept positions lie before ``position``."""
    return int(np.searchsorted(kept, position))


def _labels(node):
    return node.meta.get("lumos", {}).get("labels")


def _shape_args(node: fx.Node, decisions) -> None:
    labels = _labels(node) or {}
    packed = len(node.args) == 2 and isinstance(node.args[1], (tuple, list))
    sizes = list(node.args[1] if packed else node.args[1:])
    if "shape" in node.kwargs:
        return
    for dim, lab in labels.items():
        if dim < len(sizes) and isinstance(sizes[dim], int) and sizes[dim] != -1:
            sizes[dim] = len(decisions.kept(lab))
    node.args = (node.args[0], tuple(sizes)) if packed else (node.args[0], *sizes)


def _split(node: fx.Node, decisions) -> None:
    info = node.meta["lumos"]["split"]
    dim, labels, sizes = info["dim"], info["labels"], info["sizes"]
    kept = decisions.kept(labels)
    bounds = np.cumsum([0, *sizes])
    new_sizes = [kept_before(kept, b) - kept_before(kept, a) for a, b in zip(bounds, bounds[1:])]
    node.op, node.target = "call_method", "split"
    node.args, node.kwargs = (node.args[0], new_sizes, dim), {}


def _slice(node: fx.Node, decisions) -> None:
    info = node.meta["lumos"]["slice"]
    kept = decisions.kept(info["labels"])
    start, stop = kept_before(kept, info["start"]), kept_before(kept, info["stop"])
    index = list(node.args[1]) if isinstance(node.args[1], tuple) else [node.args[1]]
    index[info["item"]] = slice(start, stop)
    node.args = (node.args[0], tuple(index) if isinstance(node.args[1], tuple) else index[0])


def _mean(node: fx.Node, decisions) -> None:
    info = node.meta["lumos"]["mean"]
    graph = node.graph
    with graph.inserting_after(node):
        divided = graph.call_function(torch.div, (node, float(info["count"])))
    node.replace_all_uses_with(divided, delete_user_cb=lambda user: user is not divided)
    node.target = "sum" if node.op == "call_method" else torch.sum


REWRITES = {"shape_args": _shape_args, "split": _split, "slice": _slice, "mean": _mean}


def rewrite_literals(gm: fx.GraphModule, decisions) -> None:
    for node in list(gm.graph.nodes):
        kind = node.meta.get("lumos", {}).get("codegen")
        if kind is not None:
            REWRITES[kind](node, decisions)
