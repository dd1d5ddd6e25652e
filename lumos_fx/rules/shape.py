"""Rules for ops that move channels between dims: ``flatten``, ``view``/``reshape``,
``permute``/``transpose``, ``(un)squeeze``, ``split``, slicing,
indexing and size queries (``aten.sym_size``).

The interesting case is a flatten boundary (paper VII.A): after
``conv -> flatten -> linear`` one conv channel is a block of ``H*W`` Linear
columns; after ``permute(0, 2, 3, 4, 1).flatten(1)`` it is a strided set of
columns. :func:`merge_labels` computes the exact positions with ``np.indices``.

Example::

    >>> import numpy as np
    >>> from lumos_fx.rules.shape import merge_labels
    >>> merge_labels((2, 3), 0, np.array([7, 8])).tolist()      # NCHW: blocks
    [7, 7, 7, 8, 8, 8]
    >>> merge_labels((3, 2), 1, np.array([7, 8])).tolist()      # channels last: strided
    [7, 8, 7, 8, 7, 8]
"""
from __future__ import annotations

import operator

import numpy as np

from .categorical import reads_a_category, tag_feature
from .heads import regroup
from .registry import REGISTRY, aten, packets


class ChannelCount:
    """A channel count the program read (``c = x.shape[1]``). As a ``view``/``reshape``
    size it is fine: it is read again at run time, after pruning, and those rules
    map labels by shape. Any other use pins it (see ``reads_sizes``)."""

    def __init__(self, labels):
        self.labels = {0: labels}


def reads_sizes(rule):
    """Mark a rule whose op may take read channel counts as arguments."""
    rule.reads_sizes = True
    return rule


def merge_labels(shape, labeled_dim: int, labels: np.ndarray) -> np.ndarray:
    """Labels of the dim made by flattening ``shape`` whose dim ``labeled_dim`` has ``labels``."""
    return labels[np.indices(shape)[labeled_dim].reshape(-1)]


def _merge(ctx, node, x: dict, dims: list[int], shape) -> np.ndarray | None:
    """Labels of dims ``dims`` of a tensor of ``shape`` merged into one dim."""
    inside = [d for d in dims if d in x]
    if not inside:
        return None
    if len(inside) > 1:
        for d in inside:
            ctx.pin(x[d], f"{node.name}: merges two channel dims")
        return None
    block = [shape[d] for d in dims]
    return merge_labels(block, dims.index(inside[0]), x[inside[0]])


def _flatten(ctx, node, start: int, end: int):
    x = ctx.of(node.args[0]) or {}
    shape = ctx.shape(node.args[0])
    rank = len(shape)
    start, end = start % rank if rank else 0, end % rank if rank else 0
    out = {d: lab for d, lab in x.items() if d < start}
    merged = _merge(ctx, node, x, list(range(start, end + 1)), shape)
    if merged is not None:
        out[start] = merged
    out.update({d - (end - start): lab for d, lab in x.items() if d > end})
    return out


@REGISTRY.ops(aten.flatten.using_ints)
def flatten(ctx, node):
    return _flatten(ctx, node, ctx.arg(node, 1, "start_dim", 0), ctx.arg(node, 2, "end_dim", -1))


def _aligned_groups(src, dst):
    """Pair up runs of dims of ``src`` and ``dst`` with equal products."""
    i = j = 0
    groups = []
    while i < len(src) or j < len(dst):
        ii, jj, pi, pj = [], [], 1, 1
        if i < len(src):
            ii.append(i); pi *= src[i]; i += 1
        if j < len(dst):
            jj.append(j); pj *= dst[j]; j += 1
        while pi != pj:
            if pi < pj and i < len(src):
                ii.append(i); pi *= src[i]; i += 1
            elif pj < pi and j < len(dst):
                jj.append(j); pj *= dst[j]; j += 1
            else:
                return None
        groups.append((ii, jj))
    return groups


_SIZED_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)


@REGISTRY.ops(*_SIZED_VIEWS, aten.unflatten.int)
@reads_sizes
def view(ctx, node):
    """A view maps runs of input dims onto runs of output dims; each run holding
    channels is laid out by :func:`lumos_fx.rules.heads.regroup` (a merge acts like
    flatten, a split of a channel dim gives blocks or heads)."""
    out = _view_labels(ctx, node)
    if out is not None:
        node.meta.setdefault("lumos", {})["codegen"] = \
            "shape_args" if node.target in _SIZED_VIEWS else "unflatten"
    return out or {}


def _view_labels(ctx, node) -> dict | None:
    """The output labels of a view of ``node.args[0]`` to ``node``'s shape (None: pinned)."""
    x = ctx.of(node.args[0]) or {}
    src, dst = ctx.shape(node.args[0]), ctx.shape(node)
    groups = _aligned_groups(src, dst) if src is not None and dst is not None else None
    if groups is None:
        ctx.pin_value(x, f"{node.name}: reshape with an unrecognised dim mapping")
        return None
    out = {}
    for ii, jj in groups:
        if any(d in x for d in ii):
            out.update(regroup(ctx, node, x, ii, jj, src, dst))
    return out


@REGISTRY.ops(aten.reshape_as.default, aten.view_as.default)
def reshape_as(ctx, node):
    """``x.reshape_as(other)`` maps dims like a view; its sizes are ``other``'s, read at
    run time after pruning, so each output dim must hold ``other``'s channels along that
    dim (unified) or, unlabeled, none (LeViT's ``bn(h.flatten(0, 1)).reshape_as(h)``)."""
    out = _view_labels(ctx, node)
    if out is None:
        return {}
    other = ctx.of(node.args[1]) or {}
    for dim in set(out) | set(other):
        mine, theirs = out.get(dim), other.get(dim)
        if mine is not None and theirs is not None and len(mine) == len(theirs):
            ctx.unify(mine, theirs, f"{node.name}: sizes read from its shape tensor")
        elif mine is not None or theirs is not None:
            for labels in (mine, theirs):
                ctx.pin(labels, f"{node.name}: a channel dim sized by another tensor's dim")
            out.pop(dim, None)
    return out


def split_channels(ctx, node, labels: np.ndarray, outer: int) -> np.ndarray:
    """A channel dim split into ``(outer, ...)`` (the inverse of a flatten:
    ``Linear(512, 4096)`` then ``view(-1, 256, 4, 4)``; heads from ``(C) -> (H, D)``):
    each of the ``outer`` entries owns a contiguous block of the old positions, so
    the block lives or dies together. Returns the labels of the ``outer`` dim."""
    blocks = labels.reshape(outer, -1)
    for column in range(1, blocks.shape[1]):
        ctx.unify(blocks[:, 0], blocks[:, column], f"{node.name}: split into blocks")
    return blocks[:, 0].copy()


@REGISTRY.ops(aten.pixel_shuffle.default)
def pixel_shuffle(ctx, node):
    """``(B, C*r*r, H, W) -> (B, C, H*r, W*r)``: output channel c reads input channels
    ``c*r*r ... c*r*r + r*r - 1``, one block."""
    x = ctx.of(node.args[0]) or {}
    _pin_other_dims(ctx, node, x)
    if 1 not in x:
        return {}
    return {1: split_channels(ctx, node, x[1], ctx.shape(node)[1])}


@REGISTRY.ops(aten.pixel_unshuffle.default)
def pixel_unshuffle(ctx, node):
    """``(B, C, H, W) -> (B, C*r*r, H/r, W/r)``: each channel becomes a block of r*r."""
    x = ctx.of(node.args[0]) or {}
    _pin_other_dims(ctx, node, x)
    if 1 not in x:
        return {}
    return {1: np.repeat(x[1], ctx.shape(node)[1] // len(x[1]))}


def _pin_other_dims(ctx, node, x: dict) -> None:
    for d, lab in x.items():
        if d != 1:
            ctx.pin(lab, f"{node.name}: {node.target} moves a channel dim into space")


def _permuted(x: dict, order) -> dict:
    position = {src: dst for dst, src in enumerate(order)}
    return {position[d]: lab for d, lab in x.items()}


@REGISTRY.ops(aten.permute.default)
def permute(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    return _permuted(ctx.of(node.args[0]) or {}, [int(d) % rank for d in node.args[1]])


@REGISTRY.ops(aten.transpose.int, aten.swapaxes.default, aten.swapdims.default)
def transpose(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    a, b = node.args[1] % rank, node.args[2] % rank
    order = list(range(rank))
    order[a], order[b] = b, a
    return _permuted(ctx.of(node.args[0]) or {}, order)


@REGISTRY.ops(aten.t.default, aten.numpy_T.default)
def matrix_transpose(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    return _permuted(ctx.of(node.args[0]) or {}, list(range(rank))[::-1])


@REGISTRY.ops(*packets("mT", "mH", "adjoint"))
def last_two_swapped(ctx, node):
    """``x.mT`` (and ``mH``, ``adjoint``): the last two dims swap."""
    rank = len(ctx.shape(node.args[0]))
    order = list(range(rank))
    if rank >= 2:
        order[-2:] = order[-1], order[-2]
    return _permuted(ctx.of(node.args[0]) or {}, order)


@REGISTRY.ops(aten.movedim.int, aten.movedim.intlist, aten.moveaxis.int, aten.moveaxis.intlist)
def movedim(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    src, dst = node.args[1], node.args[2]
    src = [s % rank for s in (src if isinstance(src, (tuple, list)) else [src])]
    dst = [d % rank for d in (dst if isinstance(dst, (tuple, list)) else [dst])]
    rest = iter(d for d in range(rank) if d not in src)
    order = [src[dst.index(k)] if k in dst else next(rest) for k in range(rank)]
    return _permuted(ctx.of(node.args[0]) or {}, order)


@REGISTRY.ops(aten.unsqueeze.default)
def unsqueeze(ctx, node):
    at = node.args[1] % (len(ctx.shape(node.args[0])) + 1)
    return {d + (d >= at): lab for d, lab in (ctx.of(node.args[0]) or {}).items()}


@REGISTRY.ops(aten.squeeze)
def squeeze(ctx, node):
    x = ctx.of(node.args[0]) or {}
    shape = ctx.shape(node.args[0])
    dim = ctx.arg(node, 1, "dim")
    dims = range(len(shape)) if dim is None else (dim if isinstance(dim, (tuple, list)) else [dim])
    gone = {d % len(shape) for d in dims if shape[d] == 1}
    for d in gone:
        ctx.pin(x.get(d), f"{node.name}: squeezes a one-channel dim")
    return {d - sum(g < d for g in gone): lab for d, lab in x.items() if d not in gone}


@REGISTRY.ops(aten.sym_size.int)
def sym_size(ctx, node):
    labels = (ctx.of(node.args[0]) or {}).get(node.args[1] % len(ctx.shape(node.args[0])))
    return ChannelCount(labels) if labels is not None else None


@REGISTRY.ops(operator.getitem)
def getitem(ctx, node):
    """An item of a tuple output (``split``, pooling with indices, ``max.dim``)."""
    labels = ctx.of(node.args[0])
    if isinstance(labels, (tuple, list)) and isinstance(node.args[1], int):
        return labels[node.args[1]]
    ctx.pin_value(labels, f"{node.name}: an item of an unlabeled tuple")
    return None


@REGISTRY.ops(aten.slice.Tensor)
def slice_tensor(ctx, node):
    """``x[:, a:b]``: a contiguous slice of a channel dim keeps those channels; the
    bounds are rewritten on extraction. Strided slices pin."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    dim = ctx.arg(node, 1, "dim", 0) % rank
    if dim not in x:
        return x
    start, end, step = (ctx.arg(node, i, name, default) for i, name, default in
                        ((2, "start", None), (3, "end", None), (4, "step", 1)))
    if step != 1 or not all(v is None or isinstance(v, int) for v in (start, end)):
        ctx.pin(x[dim], f"{node.name}: strided or computed slice of a channel dim")
        return {d: lab for d, lab in x.items() if d != dim}
    start, stop, _ = slice(start, end).indices(len(x[dim]))
    stop = max(start, stop)
    if (start, stop) == (0, len(x[dim])):
        return x
    node.meta.setdefault("lumos", {}).update(codegen="slice", slice={
        "labels": x[dim], "start": start, "stop": stop})
    return {**x, dim: x[dim][start:stop]}


@REGISTRY.ops(aten.select.int)
def select(ctx, node):
    """``x.select(dim, i)``: fine on a non-channel dim. On a channel dim the channel read
    survives extraction whatever its gate (the rest of its group stays prunable) and
    ``i`` is rewritten to its kept position; or it reads a categorical feature's code.
    Constant picks that keep the dim (``narrow``, ``index_select``, ``x[..., idx]``)
    are in :mod:`.gather`."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    dim = node.args[1] % rank
    index = node.args[2]
    if reads_a_category(ctx, node, x.get(dim)):
        tag_feature(ctx, node, x[dim])
    elif dim in x and isinstance(index, int):
        labels = x[dim]
        ctx.channels.keep(labels[[index % len(labels)]])
        node.meta.setdefault("lumos", {}).update(codegen="select", select={
            "labels": labels, "index": index % len(labels)})
    else:
        ctx.pin(x.get(dim), f"{node.name}: indexes into a channel dim")
    return {d - (d > dim): lab for d, lab in x.items() if d != dim}


@REGISTRY.ops(*packets("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split"))
def split(ctx, node):
    """Pieces along a channel dim take their slice of the labels (sizes rewritten
    on extraction); along any other dim every piece keeps the channels."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    dim = ctx.arg(node, 2, "dim", 0) % rank
    pieces = [tuple(m.shape) for m in node.meta.get("tensor_meta") or ()]
    rest = {d: lab for d, lab in x.items() if d != dim}
    if dim not in x:
        return tuple(dict(rest) for _ in pieces)
    sizes = [p[dim] for p in pieces]
    bounds = np.cumsum([0, *sizes])
    node.meta.setdefault("lumos", {}).update(
        codegen="split", split={"dim": dim, "labels": x[dim], "sizes": sizes})
    return tuple({**rest, dim: x[dim][a:b]} for a, b in zip(bounds, bounds[1:]))


@REGISTRY.ops(aten.unbind.int)
def unbind(ctx, node):
    x = ctx.of(node.args[0]) or {}
    dim = ctx.arg(node, 1, "dim", 0) % len(ctx.shape(node.args[0]))
    ctx.pin(x.get(dim), f"{node.name}: unbind along a channel dim")
    piece = {d - (d > dim): lab for d, lab in x.items() if d != dim}
    return tuple(piece for _ in node.meta.get("tensor_meta") or ())
