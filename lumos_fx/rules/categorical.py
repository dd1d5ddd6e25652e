"""Categorical input features read through one embedding table each (OGB's Atom and
Bond encoders): a closed feature removes its table.

An integer input ``x`` of shape ``(N, F)`` whose every use is ``x[:, i]`` gets a
feature space on dim 1, like a real-valued input. ``x[:, i]`` tags its result
with feature ``i``; an embedding looked up with those indices reads feature
``i`` through its whole table, so the feature's gate multiplies the table
(``embedding(z * W, idx) == z * embedding(W, idx)``). A closed feature leaves
the table reading nothing: extraction replaces the lookup by zeros of its kept
width and drops the table.

Example::

    >>> import torch
    >>> from torch import fx
    >>> from lumos_fx.rules.categorical import is_categorical_input
    >>> from torch.fx.passes.shape_prop import ShapeProp
    >>> graph = fx.Graph()
    >>> x = graph.placeholder("x")
    >>> _ = graph.output(graph.call_function(torch.ops.aten.select.int, (x, 1, 0)))
    >>> gm = fx.GraphModule(torch.nn.Module(), graph)
    >>> _ = ShapeProp(gm).propagate(torch.zeros(4, 3, dtype=torch.long))
    >>> is_categorical_input(x)
    True
"""
from __future__ import annotations

import numpy as np
from torch import fx

from .context import split_path
from .param_views import is_copy
from .registry import aten

def is_categorical_input(node: fx.Node) -> bool:
    """An integer ``(N, F)`` input read only as columns ``x[:, i]``."""
    meta = node.meta.get("tensor_meta")
    if meta is None or meta.dtype.is_floating_point or meta.dtype.is_complex or \
            len(meta.shape) != 2:
        return False
    return _columns_only(node)


def _columns_only(node: fx.Node) -> bool:
    """Every use is ``select(·, 1, i)``, possibly after full slices of dim 0 (``x[:, i]``)."""
    for user in node.users:
        if user.target is aten.select.int and user.args[0] is node and user.args[1] % 2 == 1:
            continue
        if user.target is aten.slice.Tensor and user.args[1] == 0 and \
                tuple(user.args[2:4]) in ((), (0,), (0, 2 ** 63 - 1), (None, None)) and \
                len(user.args) < 5 and _columns_only(user):
            continue
        return False
    return bool(node.users)


def reads_a_category(ctx, node, labels) -> bool:
    """``select(x, dim, i)`` on the feature dim of a categorical input."""
    return labels is not None and len(labels) > 0 and labels[0] >= 0 and \
        ctx.channels.space_of(int(labels[0])).kind == "categorical"


def tag_feature(ctx, node, labels: np.ndarray) -> None:
    """``x[:, i]`` of a categorical input: its result stands for feature ``i``."""
    node.meta.setdefault("lumos", {})["feature"] = int(labels[node.args[2] % len(labels)])


def feature_of(node) -> int | None:
    """The feature atom that embedding indices stand for, through dtype casts and copies."""
    while isinstance(node, fx.Node):
        atom = node.meta.get("lumos", {}).get("feature")
        if atom is not None:
            return atom
        if not is_copy(node):
            return None
        node = node.args[0]
    return None


def gate_table(ctx, node, weight: str, atom: int) -> np.ndarray:
    """Gate the whole table ``weight`` (argument 0 of ``node``) with feature ``atom``;
    returns the labels of the table's rows."""
    rows = np.full(ctx.shape(node.args[0])[0], atom, dtype=np.int64)
    ctx.consume_labels(node, 0, 0, rows, fold=(*split_path(weight), 0), weight_arg=0)
    node.meta.setdefault("lumos", {})["table_of_feature"] = True
    return rows
