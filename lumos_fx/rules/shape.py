"""Rules for ops that move channels between dims: flatten, view/reshape,
permute/transpose, (un)squeeze, cat/stack, indexing and size queries.

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

import math
import operator

import numpy as np
import torch
from torch import fx, nn

from .registry import REGISTRY


class SizeOf:
    """The labels of a tensor whose ``.shape``/``.size()`` was taken."""

    def __init__(self, labels: dict):
        self.labels = labels


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


def _dim_size(labels: SizeOf, dim: int):
    lab = labels.labels.get(dim)
    return ChannelCount(lab) if lab is not None else None


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


@REGISTRY.functions(torch.flatten)
@REGISTRY.methods("flatten")
def flatten(ctx, node):
    return _flatten(ctx, node, ctx.arg(node, 1, "start_dim", 0), ctx.arg(node, 2, "end_dim", -1))


@REGISTRY.modules(nn.Flatten)
def flatten_module(ctx, node):
    mod = ctx.module(node)
    return _flatten(ctx, node, mod.start_dim, mod.end_dim)


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


@REGISTRY.functions(torch.reshape)
@REGISTRY.methods("view", "reshape")
@reads_sizes
def view(ctx, node):
    """A view that merges dims acts like flatten; one that splits a channel dim pins it."""
    x = ctx.of(node.args[0]) or {}
    src, dst = ctx.shape(node.args[0]), ctx.shape(node)
    groups = _aligned_groups(src, dst) if src is not None and dst is not None else None
    if groups is None:
        ctx.pin_value(x, f"{node.name}: reshape with an unrecognised dim mapping")
        return {}
    out = {}
    for ii, jj in groups:
        if not any(d in x for d in ii):
            continue
        wide = [j for j in jj if dst[j] != 1]
        if len(wide) == 1 and math.prod(src[d] for d in ii) == dst[wide[0]]:
            merged = _merge(ctx, node, x, ii, src)
            if merged is not None:
                out[wide[0]] = merged
        else:
            for d in ii:
                ctx.pin(x.get(d), f"{node.name}: reshape splits a channel dim")
    node.meta.setdefault("lumos", {})["codegen"] = "shape_args"
    return out


def _permuted(x: dict, order) -> dict:
    position = {src: dst for dst, src in enumerate(order)}
    return {position[d]: lab for d, lab in x.items()}


@REGISTRY.functions(torch.permute)
@REGISTRY.methods("permute")
def permute(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    dims = node.args[1:] if not isinstance(ctx.arg(node, 1, "dims"), (tuple, list)) \
        else ctx.arg(node, 1, "dims")
    return _permuted(ctx.of(node.args[0]) or {}, [int(d) % rank for d in dims])


@REGISTRY.functions(torch.transpose, torch.swapaxes, torch.swapdims)
@REGISTRY.methods("transpose", "swapaxes", "swapdims")
def transpose(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    a, b = ctx.arg(node, 1, "dim0") % rank, ctx.arg(node, 2, "dim1") % rank
    order = list(range(rank))
    order[a], order[b] = b, a
    return _permuted(ctx.of(node.args[0]) or {}, order)


@REGISTRY.methods("t")
def matrix_transpose(ctx, node):
    return _permuted(ctx.of(node.args[0]) or {}, [1, 0])


@REGISTRY.functions(torch.movedim, torch.moveaxis)
@REGISTRY.methods("movedim", "moveaxis")
def movedim(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    src, dst = ctx.arg(node, 1, "source"), ctx.arg(node, 2, "destination")
    src = [s % rank for s in (src if isinstance(src, (tuple, list)) else [src])]
    dst = [d % rank for d in (dst if isinstance(dst, (tuple, list)) else [dst])]
    rest = iter(d for d in range(rank) if d not in src)
    order = [src[dst.index(k)] if k in dst else next(rest) for k in range(rank)]
    return _permuted(ctx.of(node.args[0]) or {}, order)


@REGISTRY.functions(torch.unsqueeze)
@REGISTRY.methods("unsqueeze")
def unsqueeze(ctx, node):
    at = ctx.arg(node, 1, "dim") % (len(ctx.shape(node.args[0])) + 1)
    return {d + (d >= at): lab for d, lab in (ctx.of(node.args[0]) or {}).items()}


@REGISTRY.functions(torch.squeeze)
@REGISTRY.methods("squeeze")
def squeeze(ctx, node):
    x = ctx.of(node.args[0]) or {}
    shape = ctx.shape(node.args[0])
    dim = ctx.arg(node, 1, "dim")
    dims = range(len(shape)) if dim is None else (dim if isinstance(dim, (tuple, list)) else [dim])
    gone = {d % len(shape) for d in dims if shape[d] == 1}
    for d in gone:
        ctx.pin(x.get(d), f"{node.name}: squeezes a one-channel dim")
    return {d - sum(g < d for g in gone): lab for d, lab in x.items() if d not in gone}


def _tensor_list(ctx, node):
    return [t for t in ctx.arg(node, 0, "tensors") if isinstance(t, fx.Node)]


@REGISTRY.functions(torch.cat, torch.concat, torch.concatenate)
def cat(ctx, node):
    """Concatenation puts label arrays end to end (with offsets, paper Fig. 7)."""
    tensors = _tensor_list(ctx, node)
    rank = len(ctx.shape(node))
    dim = ctx.arg(node, 1, "dim", 0) % rank
    pieces = [(ctx.of(t) or {}).get(dim) for t in tensors]
    out = {}
    if any(p is not None for p in pieces):
        out[dim] = np.concatenate([p if p is not None else np.full(ctx.shape(t)[dim], -1)
                                   for p, t in zip(pieces, tensors)]).astype(np.int64)
    out.update(_unify_other_dims(ctx, node, tensors, skip=dim))
    return out


@REGISTRY.functions(torch.stack)
def stack(ctx, node):
    tensors = _tensor_list(ctx, node)
    at = ctx.arg(node, 1, "dim", 0) % (len(ctx.shape(tensors[0])) + 1)
    return {d + (d >= at): lab for d, lab in _unify_other_dims(ctx, node, tensors).items()}


def _unify_other_dims(ctx, node, tensors, skip=None) -> dict:
    out = {}
    for t in tensors:
        for d, lab in (ctx.of(t) or {}).items():
            if d == skip:
                continue
            if d in out:
                ctx.unify(out[d], lab, f"{node.name}: joined with a fixed channel")
            else:
                out[d] = lab
    for d, lab in out.items():
        if any((ctx.of(t) or {}).get(d) is None for t in tensors):
            ctx.pin(lab, f"{node.name}: joined with an unlabeled tensor")
    return out


@REGISTRY.methods("size")
def size(ctx, node):
    x = ctx.of(node.args[0]) or {}
    dim = ctx.arg(node, 1, "dim")
    if dim is None:
        return SizeOf(x)
    return _dim_size(SizeOf(x), dim % len(ctx.shape(node.args[0])))


@REGISTRY.functions(getattr)
def tensor_attribute(ctx, node):
    x = ctx.of(node.args[0]) or {}
    if node.args[1] == "shape":
        return SizeOf(x)
    if node.args[1] in ("dtype", "device", "ndim", "is_cuda", "requires_grad"):
        return None
    if node.args[1] in ("T", "mT", "mH", "H"):
        rank = len(ctx.shape(node.args[0]))
        return _permuted(x, list(range(rank))[::-1]) if node.args[1] in ("T", "H") else \
            _permuted(x, list(range(rank - 2)) + [rank - 1, rank - 2])
    ctx.pin_value(x, f"{node.name}: tensor attribute {node.args[1]!r}")
    return None


@REGISTRY.functions(operator.getitem)
def getitem(ctx, node):
    """Tuple items, size entries, and tensor indexing with full slices on channel dims."""
    source, index = node.args
    labels = ctx.of(source)
    if isinstance(labels, SizeOf):
        rank = len(ctx.shape(source.args[0]))
        if isinstance(index, int):
            return _dim_size(labels, index % rank)
        if isinstance(index, slice):        # x.shape[2:]: only the dims it names
            dims = range(rank)[index]
            sub = {i: labels.labels[d] for i, d in enumerate(dims) if d in labels.labels}
            return SizeOf(sub) if sub else None
        ctx.pin_value(labels.labels, f"{node.name}: the program reads channel counts")
        return None
    if isinstance(labels, (tuple, list)):
        return labels[index] if isinstance(index, int) else None
    if ctx.shape(source) is None:
        return None
    return _index_tensor(ctx, node, labels or {}, index, len(ctx.shape(source)))


def _index_tensor(ctx, node, x: dict, index, rank: int) -> dict:
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, fx.Node) or not isinstance(i, (int, slice, type(None), type(...)))
           for i in items):
        ctx.pin_value(x, f"{node.name}: advanced indexing")
        return {}
    sliced = False
    if ... in items:
        at = items.index(...)
        fill = rank - sum(i is not None for i in items if i is not ...)
        items = items[:at] + [slice(None)] * fill + items[at + 1:]
    items += [slice(None)] * (rank - sum(i is not None for i in items))
    out, src, dst = {}, 0, 0
    for position, item in enumerate(items):
        if item is None:
            dst += 1
            continue
        if src in x:
            if item == slice(None):
                out[dst] = x[src]
            elif _plain_slice(item) and not sliced:
                start, stop, _ = item.indices(len(x[src]))
                out[dst] = x[src][start:stop]
                node.meta.setdefault("lumos", {}).update(codegen="slice", slice={
                    "item": position, "labels": x[src], "start": start, "stop": max(start, stop)})
                sliced = True
            else:
                ctx.pin(x[src], f"{node.name}: indexes into a channel dim")
        src += 1
        dst += 0 if isinstance(item, int) else 1
    return out


def _plain_slice(item) -> bool:
    return isinstance(item, slice) and item.step in (None, 1) and all(
        v is None or isinstance(v, int) for v in (item.start, item.stop))


@REGISTRY.functions(torch.split, torch.chunk, torch.unbind, torch.tensor_split)
@REGISTRY.methods("split", "chunk", "unbind", "tensor_split")
def split(ctx, node):
    """Pieces along a channel dim take their slice of the labels (sizes rewritten
    on extraction); along any other dim every piece keeps the channels."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    name = node.target if isinstance(node.target, str) else node.target.__name__
    dim = ctx.arg(node, 1 if name == "unbind" else 2, "dim", 0) % rank
    pieces = [tuple(m.shape) for m in node.meta.get("tensor_meta") or ()]
    if name == "unbind":
        ctx.pin(x.get(dim), f"{node.name}: unbind along a channel dim")
        piece = {d - (d > dim): lab for d, lab in x.items() if d != dim}
        return tuple(piece for _ in pieces)
    rest = {d: lab for d, lab in x.items() if d != dim}
    if dim not in x:
        return tuple(dict(rest) for _ in pieces)
    sizes = [p[dim] for p in pieces]
    bounds = np.cumsum([0, *sizes])
    node.meta.setdefault("lumos", {}).update(
        codegen="split", split={"dim": dim, "labels": x[dim], "sizes": sizes})
    return tuple({**rest, dim: x[dim][a:b]} for a, b in zip(bounds, bounds[1:]))


@REGISTRY.methods("expand", "repeat")
def expand(ctx, node):
    """Expanding size-1 dims keeps channels; literal sizes on a channel dim pin it."""
    x = ctx.of(node.args[0]) or {}
    out_rank = len(ctx.shape(node))
    shift = out_rank - len(ctx.shape(node.args[0]))
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    out = {}
    for d, lab in x.items():
        keeps = node.target == "expand" and d + shift < len(sizes) and sizes[d + shift] == -1
        if keeps:
            out[d + shift] = lab
        else:
            ctx.pin(lab, f"{node.name}: {node.target} with a literal channel count")
    return out
