"""Rules for picking positions of a dim by constant indices: ``narrow``, ``index_select``
and ``x[..., idx]`` with a literal index list.

A pick whose positions are known when the model is compiled is a relabeling,
like a slice: output position ``p`` carries the channel of input position
``idx[p]``. So ``coords = x[:, [0, 1, 2]]`` of an input keeps feature selection
for those features, and Falcon's fused query/key/value heads (``qkv[..., [-2],
:]`` picks the shared key head) keep their heads prunable. On extraction the
literal is rewritten to the kept positions (``codegen="gather"``): a closed
channel leaves the output too, so the result stays exact. A repeated index
repeats the channel (one gate value reaches every copy). An index computed at
run time (a graph layer's ``edge_index``) on a channel dim still pins: which
channel lands where is not known. So does a boolean mask: ``torch.export`` gives
its result a data-dependent size and asserts its value, which pins.

Example::

    >>> import numpy as np
    >>> from lumos_fx.rules.gather import rewritten_index
    >>> # input channels 0..4, channel 1 closed; the literal picked [3, 1, 3]
    >>> rewritten_index(np.array([0, 2, 3, 4]), np.array([3, 1, 3]), np.array([0, 2])).tolist()
    [2, 2]
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx

from .context import lookup
from .registry import REGISTRY, aten

# ops a literal may pass through on its way to the index argument
_COPIES = {aten.lift_fresh_copy.default, aten.clone.default, aten.detach.default,
           aten.detach_.default, aten.alias.default}


def literal(root: fx.GraphModule, value) -> torch.Tensor | None:
    """The tensor ``value`` is when it is a constant of ``root``'s graph (a ``get_attr``,
    maybe copied: a lifted literal), else None."""
    while isinstance(value, fx.Node) and value.op == "call_function" and value.target in _COPIES:
        value = value.args[0]
    if not (isinstance(value, fx.Node) and value.op == "get_attr"):
        return None
    tensor = lookup(root, value.target)
    return tensor if isinstance(tensor, torch.Tensor) else None


def literal_positions(ctx, value, size: int) -> np.ndarray | None:
    """The positions a 1-D integer index ``value`` picks from a dim of ``size`` when it is a
    constant of the graph (a lifted literal, maybe copied), normalised to ``[0, size)``;
    None when it is computed, of another rank, or out of range."""
    tensor = literal(ctx.root, value)
    if tensor is None or tensor.dim() != 1 or tensor.dtype not in (
            torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return None
    positions = tensor.cpu().long().numpy()
    if ((positions < -size) | (positions >= size)).any():
        return None
    return positions % size


def rewritten_index(kept_in: np.ndarray, positions: np.ndarray,
                    kept_out: np.ndarray) -> np.ndarray:
    """The index into the kept input positions ``kept_in`` (sorted) of the picks
    ``positions[kept_out]`` (every one of them kept)."""
    return np.searchsorted(kept_in, positions[kept_out]).astype(np.int64)


def _picked(ctx, node, x: dict, dim: int, positions: np.ndarray, index_arg) -> dict:
    """The input's labels with ``dim`` relabeled by ``positions``; marks the node for the
    rewrite of its literal at ``index_arg`` (an arg position, or ``(arg, item)``)."""
    labels = x[dim]
    node.meta.setdefault("lumos", {}).update(codegen="gather", gather={
        "labels": labels, "positions": positions, "arg": index_arg})
    return {**x, dim: labels[positions]}


@REGISTRY.ops(aten.narrow.default, aten.narrow_copy.default)
def narrow(ctx, node):
    """``x.narrow(dim, start, length)``: a slice; the bounds are rewritten on extraction."""
    x = ctx.of(node.args[0]) or {}
    dim = node.args[1] % len(ctx.shape(node.args[0]))
    start, length = node.args[2], node.args[3]
    if dim not in x:
        return x
    if not (isinstance(start, int) and isinstance(length, int)):
        ctx.pin(x[dim], f"{node.name}: a computed narrow of a channel dim")
        return {d: lab for d, lab in x.items() if d != dim}
    start %= len(x[dim])
    node.meta.setdefault("lumos", {}).update(codegen="slice", slice={
        "labels": x[dim], "start": start, "stop": start + length})
    return {**x, dim: x[dim][start:start + length]}


@REGISTRY.ops(aten.index_select.default)
def index_select(ctx, node):
    """``x.index_select(dim, idx)``: a literal ``idx`` relabels, a computed one pins."""
    x = ctx.of(node.args[0]) or {}
    dim = node.args[1] % len(ctx.shape(node.args[0]))
    if dim not in x:
        return x
    positions = literal_positions(ctx, node.args[2], len(x[dim]))
    if positions is None:
        ctx.pin(x[dim], f"{node.name}: indexes into a channel dim")
        return {d: lab for d, lab in x.items() if d != dim}
    return _picked(ctx, node, x, dim, positions, 2)


@REGISTRY.ops(aten.index.Tensor)
def index(ctx, node):
    """``x[..., idx]`` with one index tensor: the indexed dim becomes the index's dims;
    on a channel dim a literal 1-D index relabels, anything else pins."""
    x = ctx.of(node.args[0]) or {}
    indices = list(node.args[1])
    tensors = [k for k, i in enumerate(indices) if i is not None]
    if len(tensors) != 1:
        ctx.pin_value(x, f"{node.name}: advanced indexing")
        return {}
    k = tensors[0]
    if k in x:
        positions = literal_positions(ctx, indices[k], len(x[k]))
        if positions is not None:
            return _picked(ctx, node, x, k, positions, (1, k))
    ctx.pin(x.get(k), f"{node.name}: indexes into a channel dim")
    grown = len(ctx.shape(node)) - len(ctx.shape(node.args[0]))
    return {d if d < k else d + grown: lab for d, lab in x.items() if d != k}
