"""Views that split a channel dim into several dims, and copies of attention heads.

A ``view``/``reshape`` maps a run of input dims onto a run of output dims with
the same number of elements (see :func:`lumos_fx.rules.shape._aligned_groups`).
When one input dim of the run carries channel labels, :func:`regroup` lays the
labels out over the output run as a table and looks for an output dim the
labels depend on alone:

* found: that dim takes the labels and nothing is unified. This covers a
  flatten (``(H, D) -> (H*D)``), the inverse split of a merged dim, and
  ``nn.MultiheadAttention``'s ``(N, B, C) -> (N, B*H, D) -> (B, H, N, D)``,
  where the heads come back out of a dim shared with the batch;
* not found (fresh rows ``(C) -> (H, D)`` or a packed ``(3C) -> (3, H, D)``):
  one output dim takes the labels and all positions with the same index along
  it are unified, so each entry (a head) lives or dies as a block. The dim is
  the outermost one with more than one entry that the program does not take
  apart again (``unbind``/``select`` after ``permute``, as in ``q, k, v =
  qkv.unbind(0)``): for ``(3, H, D)`` that is the heads dim, so head ``h``
  owns rows ``h*D ...`` of each of the q, k and v thirds of the packed weight.
  The choice only decides what can be pruned, never exactness: every later
  rule treats the labeled dim as a channel dim.

A symbolic size on a labeled dim (``B * 4`` heads, read from the batch) is
rewritten on extraction when it is ``sym * literal`` and the labels repeat with
that period (every literal factor counts: ``(B * 16) * 2`` has period 32); anything
else pins.

Grouped-query attention copies key/value heads: ``repeat_interleave(k, n, 1)``
repeats each head's label ``n`` times, ``k[:, :, None].expand(B, Hkv, n, T, D)``
keeps the heads dim (the literal ``Hkv`` is rewritten) and the reshape that
merges ``(Hkv, n)`` then repeats each label, so a key/value head and its ``n``
query heads are one channel (:mod:`lumos_fx.rules.attention` unifies them).

Example::

    >>> import numpy as np
    >>> from lumos_fx.rules.heads import factor
    >>> table = np.array([7, 8, 7, 8, 7, 8]).reshape(3, 2)    # (B*H) -> (B, H)
    >>> [(axis, line.tolist()) for axis, line in [factor(table)]]
    [(1, [7, 8])]
    >>> factor(np.arange(6).reshape(2, 3)) is None            # fresh rows: unify
    True
"""
from __future__ import annotations

import operator

import numpy as np
from torch import fx

from .param_views import is_copy
from .registry import REGISTRY, aten


def factor(table: np.ndarray):
    """``(axis, labels)`` when ``table`` depends on its index along one axis alone
    (axes with more than one entry first), else None."""
    axes = sorted(range(table.ndim), key=lambda a: table.shape[a] == 1)
    for axis in axes:
        line = _line(table, axis)
        shape = [1] * table.ndim
        shape[axis] = -1
        if np.array_equal(table, np.broadcast_to(line.reshape(shape), table.shape)):
            return axis, line
    return None


def _line(table: np.ndarray, axis: int) -> np.ndarray:
    """The entries of ``table`` along ``axis`` at index 0 of every other axis."""
    index = [0] * table.ndim
    index[axis] = slice(None)
    return table[tuple(index)].copy()


def regroup(ctx, node, x: dict, ii: list[int], jj: list[int], src, dst) -> dict:
    """Labels of output dims ``jj`` of a view whose input dims ``ii`` hold ``x``'s labels."""
    labeled = [d for d in ii if d in x]
    if len(labeled) > 1:
        for d in labeled:
            ctx.pin(x[d], f"{node.name}: reshape merges two channel dims")
        return {}
    d = labeled[0]
    shape = [src[k] for k in ii]
    table = x[d][np.indices(shape)[ii.index(d)]].reshape([dst[j] for j in jj])
    found = factor(table)
    if found is None:
        axis = _label_axis(node, jj, table.shape)
        for entry in range(table.shape[axis]):
            block = np.take(table, entry, axis=axis).reshape(-1)
            ctx.unify(np.repeat(block[:1], len(block) - 1), block[1:],
                      f"{node.name}: split into blocks")
        found = axis, _line(table, axis)
    axis, labels = found
    j = jj[axis]
    if not _size_follows(node, j, labels):
        ctx.pin(labels, f"{node.name}: a computed size on a channel dim")
        return {}
    return {j: labels}


def _size_follows(node, j: int, labels: np.ndarray) -> bool:
    """Whether extraction can rewrite the size of output dim ``j``: a literal, ``-1``, a
    size read from a tensor (``x.shape[1]``, read again after pruning), or ``sym *
    literal`` whose labels repeat with period ``literal`` (the channels live in the
    literal, so the kept count is ``sym`` times the kept part of one period)."""
    size = size_arg(node, j)
    if not isinstance(size, fx.Node):
        return True
    if size.target is aten.sym_size.int:      # read again at run time, after pruning
        return True
    if node.target is aten.unflatten.int:     # codegen rewrites its literal sizes only
        return False
    scaled = scaled_symbol(size)
    if scaled is None or len(labels) % scaled[1]:
        return False
    table = labels.reshape(-1, scaled[1])         # one row per value of the symbol
    return bool((table == table[:1]).all())


def size_arg(node: fx.Node, j: int):
    """The size argument of a view or ``unflatten`` for output dim ``j`` (None if none)."""
    if node.target is aten.unflatten.int:
        sizes = list(node.args[2])
        start = node.args[1] % (len(node.meta["tensor_meta"].shape) - len(sizes) + 1)
        return sizes[j - start] if 0 <= j - start < len(sizes) else None
    sizes = node.args[1]
    return sizes[j] if isinstance(sizes, (list, tuple)) and j < len(sizes) else None


def scaled_symbol(size) -> tuple[fx.Node, int] | None:
    """``(sym, c)`` of a size node ``sym * c`` with every literal factor of a chain of
    products folded into ``c`` (``(s0 * 16) * 2`` is ``(s0, 32)``), else None."""
    symbol, literal = size, 1
    while isinstance(symbol, fx.Node) and symbol.target is operator.mul and len(symbol.args) == 2:
        literals = [a for a in symbol.args if isinstance(a, int)]
        if len(literals) != 1 or literals[0] <= 0:
            break
        literal *= literals[0]
        symbol = next(a for a in symbol.args if not isinstance(a, int))
    return (symbol, literal) if literal > 1 and isinstance(symbol, fx.Node) else None


def _label_axis(node, jj: list[int], shape) -> int:
    """The outermost wide output dim the program does not take apart later."""
    wide = [a for a, size in enumerate(shape) if size != 1] or [0]
    return next((a for a in wide if not unpacked(node, jj[a])), wide[0])


def unpacked(node: fx.Node, dim: int) -> bool:
    """Whether some later op indexes ``node``'s output apart along ``dim`` (``unbind``
    or ``select`` on it), followed through ops that only move dims."""
    frontier, seen = [(node, dim)], set()
    while frontier:
        current, d = frontier.pop()
        if (current, d) in seen:
            continue
        seen.add((current, d))
        rank = len(current.meta["tensor_meta"].shape)
        for user in current.users:
            if user.op != "call_function" or not user.args or user.args[0] is not current:
                continue
            if user.target in (aten.select.int, aten.unbind.int):
                at = (user.args[1] if len(user.args) > 1 else 0) % rank
                if at == d:
                    return True
                if user.target is aten.select.int:
                    frontier.append((user, d - (at < d)))
                continue
            moved = _moved(user, d, rank)
            if moved is not None:
                frontier.append((user, moved))
    return False


def _moved(user: fx.Node, d: int, rank: int) -> int | None:
    """Where dim ``d`` of ``user``'s input lands in its output, for ops that move dims."""
    target = user.target
    if is_copy(user) or target is aten.slice.Tensor:
        return d
    if target in (aten.expand.default, aten.broadcast_to.default):
        return d + len(user.args[1]) - rank
    if target is aten.permute.default:
        return [int(a) % rank for a in user.args[1]].index(d)
    if target is aten.transpose.int:
        a, b = user.args[1] % rank, user.args[2] % rank
        return b if d == a else a if d == b else d
    if target is aten.unsqueeze.default:
        return d + (d >= user.args[1] % (rank + 1))
    if target is aten.squeeze.dim:
        at = user.args[1] % rank
        return None if at == d else d - (at < d)
    return None


@REGISTRY.ops(aten.expand.default, aten.broadcast_to.default, aten.repeat.default)
def expand(ctx, node):
    """Expanding size-1 dims keeps channels: ``-1`` (or a repeat of 1) on a channel dim,
    or an ``expand``/``broadcast_to`` size equal to the channel count
    (``k[:, :, None].expand(B, Hkv, n, T, D)``), which extraction rewrites to the kept
    count. ``repeat(..., n, ...)`` on a channel dim tiles its labels. Anything else pins.
    A tensor without channels expanded from size 1 to a literal size (a key padding mask
    over the heads) gets "broadcast" channels there, to be joined with what it meets;
    left on their own they are pinned (:func:`lumos_fx.passes.build_groups.build_groups`)."""
    x = ctx.of(node.args[0]) or {}
    sizes = list(node.args[1])
    src = ctx.shape(node.args[0])
    shift = len(ctx.shape(node)) - len(src)
    out = {}
    for d, lab in x.items():
        size = sizes[d + shift]
        if node.target is aten.repeat.default:
            if isinstance(size, int):
                out[d + shift] = np.tile(lab, size)
                continue
        elif size == -1:
            out[d + shift] = lab
            continue
        elif isinstance(size, int) and size == src[d] and size > 1:
            out[d + shift] = lab
            node.meta.setdefault("lumos", {})["codegen"] = "shape_args"
            continue
        ctx.pin(lab, f"{node.name}: {node.target} with a computed or new size on a channel dim")
    if node.target is not aten.repeat.default and not x:
        for d, size in enumerate(sizes[shift:]):
            if src[d] == 1 and isinstance(size, int) and size > 1:
                # copies of one entry of a tensor without channels (a padding mask
                # expanded over the heads): channels that join what they meet (the heads);
                # extraction rewrites the literal size
                out[d + shift] = ctx.produce(node, size, kind="broadcast",
                                             key=f"broadcast:{ctx.training}:{node.name}:{d}")
                node.meta.setdefault("lumos", {})["codegen"] = "shape_args"
    return out


@REGISTRY.ops(aten.tile.default)
def tile(ctx, node):
    """``x.tile(reps)``: a ``repeat`` whose ``reps`` align with the last dims."""
    x = ctx.of(node.args[0]) or {}
    reps, rank = list(node.args[1]), len(ctx.shape(node))
    reps = [1] * (rank - len(reps)) + reps
    shift = rank - len(ctx.shape(node.args[0]))
    out = {}
    for d, lab in x.items():
        if isinstance(reps[d + shift], int):
            out[d + shift] = np.tile(lab, reps[d + shift])
        else:
            ctx.pin(lab, f"{node.name}: tile with a computed count on a channel dim")
    return out


@REGISTRY.ops(aten.repeat_interleave.self_int)
def repeat_interleave(ctx, node):
    """``repeat_interleave(x, n, dim)``: each position of ``dim`` becomes ``n`` copies
    (GQA's key/value heads); without ``dim`` the input is flattened first: pins."""
    x = ctx.of(node.args[0]) or {}
    repeats = ctx.arg(node, 1, "repeats")
    dim = ctx.arg(node, 2, "dim")
    if dim is None or not isinstance(repeats, int):
        ctx.pin_value(x, f"{node.name}: repeat_interleave without a dim or with computed repeats")
        return {}
    dim %= len(ctx.shape(node.args[0]))
    return {d: np.repeat(lab, repeats) if d == dim else lab for d, lab in x.items()}


def row_slice(ctx, value):
    """``(parameter path, start, stop, split node, rows)`` when ``value`` is rows ``start:stop``
    of a parameter: ``W.split([E, 2E])[i]`` or ``W.chunk(3)[i]`` along dim 0 (the
    packed ``in_proj_weight`` of ``nn.MultiheadAttention`` when query and key differ),
    or ``W[a:b]``; else None."""
    if not isinstance(value, fx.Node) or value.op != "call_function":
        return None
    if value.target is aten.slice.Tensor:
        path = ctx.attr(value.args[0])
        dim, start, stop, step = (ctx.arg(value, i, n, d) for i, n, d in (
            (1, "dim", 0), (2, "start", None), (3, "end", None), (4, "step", 1)))
        if path is None or dim != 0 or step != 1:
            return None
        total = ctx.tensor(value.args[0]).shape[0]
        start, stop, _ = slice(start, stop).indices(total)
        return path, start, stop, value, total
    if value.target is not operator.getitem:
        return None
    split, index = value.args
    packet = getattr(split.target, "overloadpacket", None)
    if packet not in (aten.split, aten.split_with_sizes) or ctx.attr(split.args[0]) is None or \
            ctx.arg(split, 2, "dim", 0) != 0:
        return None
    sizes = [tuple(m.shape)[0] for m in split.meta["tensor_meta"]]
    bounds = np.cumsum([0, *sizes])
    return (ctx.attr(split.args[0]), int(bounds[index]), int(bounds[index + 1]), split,
            int(bounds[-1]))


def mark_row_slice(found, rows: np.ndarray) -> None:
    """Let extraction rewrite the sizes or bounds of a row slice of a sliced parameter."""
    _, start, stop, node, _ = found
    if node.target is aten.slice.Tensor:
        info = {"codegen": "slice", "slice": {"labels": rows, "start": start, "stop": stop}}
    else:
        sizes = [tuple(m.shape)[0] for m in node.meta["tensor_meta"]]
        info = {"codegen": "split", "split": {"dim": 0, "labels": rows, "sizes": sizes}}
    node.meta.setdefault("lumos", {}).update(info)


def packed_rows(ctx, node, weight_index: int = 1, bias_index: int = 2):
    """For a layer reading rows ``start:stop`` of a packed weight (and the same rows of
    its bias): ``(weight path, bias path, start, stop, slices, rows)``, else None."""
    weight = row_slice(ctx, ctx.arg(node, weight_index, "weight"))
    bias_node = ctx.arg(node, bias_index, "bias")
    bias = row_slice(ctx, bias_node) if bias_node is not None else None
    if weight is None or (bias_node is not None and (bias is None or bias[1:3] != weight[1:3])):
        return None
    return (weight[0], bias and bias[0], weight[1], weight[2], [s for s in (weight, bias) if s],
            weight[4])
