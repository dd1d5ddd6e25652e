"""Rewrite literals in the graph that depended on a pruned size.

Rules mark a node with ``node.meta["lumos"]["codegen"] = KIND``; after the
parameters are sliced, :func:`rewrite_literals` fixes each marked node so the
pruned model runs for any batch size without user patches:

* ``shape_args`` - ``view``/``reshape``/``expand`` sizes on shrunk dims become the kept
  counts (a size ``s0 * H`` becomes ``s0 * kept``); ``unflatten`` - the same for its sizes;
* ``split`` - ``split``/``chunk`` along a channel dim become ``split_with_sizes``
  with each piece's kept count;
* ``slice`` - ``x[:, a:b]`` (or ``narrow``) on a channel dim becomes the kept positions'
  bounds;
* ``select`` - ``x[:, i]`` of a channel kept whatever its gate becomes its kept position;
* ``gather`` - a literal index (``index_select``, ``x[..., idx]``) on a channel dim
  becomes the kept picks' positions among the kept channels;
* ``factory_size`` - a tensor the model allocates (``torch.zeros(B, C, M)``, a recurrent
  layer's zero state) follows the kept size of the channels written into it;
* ``layer_norm`` - LayerNorm/RMSNorm (and one-group GroupNorm) over pruned channels keeps
  the original divisor;
* ``groups`` - a depthwise convolution's ``groups`` follows its kept channels;
* ``num_groups`` - a ``group_norm``'s group count becomes the kept groups' count;
* ``mean`` - a ``mean`` over a channel dim becomes ``sum / original_count``,
  which is exact because closed channels are gated to zero.

Example::

    >>> import numpy as np
    >>> from lumos_fx.passes.codegen import kept_before
    >>> kept_before(np.array([0, 2, 3]), 3)   # positions 0, 2 of the first 3 survive
    2
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from ..rules.context import arg_at, replace_arg
from ..rules.gather import literal, rewritten_index
from ..rules.heads import scaled_symbol

aten = torch.ops.aten


def kept_before(kept: np.ndarray, position: int) -> int:
    """How many kept positions lie before ``position``."""
    return int(np.searchsorted(kept, position))


def _labels(node):
    return node.meta.get("lumos", {}).get("labels")


def _shape_args(node: fx.Node, decisions) -> None:
    """``aten.view(x, [s0, 64, 4])``: literal sizes of shrunk dims become kept counts;
    a size ``s0 * 4`` (heads merged with the batch) becomes ``s0 * kept`` (the rule
    checked that the kept count is a multiple of ``len(labels) / 4``)."""
    sizes = list(node.args[1])
    for dim, lab in (_labels(node) or {}).items():
        if dim >= len(sizes):
            continue
        kept = len(decisions.kept(lab))
        if isinstance(sizes[dim], int) and sizes[dim] != -1:
            sizes[dim] = kept
        elif isinstance(sizes[dim], fx.Node) and kept != len(lab):
            sizes[dim] = _scaled_size(node, sizes[dim], kept, len(lab))
    node.args = (node.args[0], sizes, *node.args[2:])


def _unflatten(node: fx.Node, decisions) -> None:
    """``aten.unflatten(x, dim, [3, 16])``: the literal sizes of shrunk dims become kept
    counts (sizes count from ``dim``)."""
    sizes = list(node.args[2])
    start = node.args[1] % (len(node.meta["tensor_meta"].shape) - len(sizes) + 1)
    for dim, lab in (_labels(node) or {}).items():
        if 0 <= dim - start < len(sizes) and isinstance(sizes[dim - start], int) \
                and sizes[dim - start] != -1:
            sizes[dim - start] = len(decisions.kept(lab))
    node.args = (node.args[0], node.args[1], sizes, *node.args[3:])


def _scaled_size(node: fx.Node, size: fx.Node, kept: int, total: int) -> fx.Node:
    """A new ``sym * (literal * kept / total)`` node before ``node`` (``size`` may have
    other users that keep their value)."""
    symbol, literal = scaled_symbol(size)
    if (literal * kept) % total:
        raise AssertionError(f"{node.name}: kept count {kept} of {total} does not scale {size}")
    with node.graph.inserting_before(node):
        return node.graph.call_function(operator.mul, (symbol, literal * kept // total))


def _split(node: fx.Node, decisions) -> None:
    info = node.meta["lumos"]["split"]
    dim, labels, sizes = info["dim"], info["labels"], info["sizes"]
    kept = decisions.kept(labels)
    bounds = np.cumsum([0, *sizes])
    new_sizes = [kept_before(kept, b) - kept_before(kept, a) for a, b in zip(bounds, bounds[1:])]
    node.target = aten.split_with_sizes.default
    node.args, node.kwargs = (node.args[0], new_sizes, dim), {}


def _slice(node: fx.Node, decisions) -> None:
    """``aten.slice(x, dim, start, end, step)`` on a channel dim: the kept bounds."""
    info = node.meta["lumos"]["slice"]
    kept = decisions.kept(info["labels"])
    start, stop = kept_before(kept, info["start"]), kept_before(kept, info["stop"])
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    node.target = aten.slice.Tensor        # a narrow's (start, length) become bounds too
    node.args, node.kwargs = (node.args[0], dim, start, stop, 1), {}


def _select(node: fx.Node, decisions) -> None:
    """``x.select(dim, i)`` of a kept channel: ``i`` becomes its kept position."""
    info = node.meta["lumos"]["select"]
    kept = decisions.kept(info["labels"])
    node.args = (node.args[0], node.args[1], kept_before(kept, info["index"]))


def _gather(node: fx.Node, decisions) -> None:
    """A literal index on a channel dim: the kept picks, as positions among the kept
    channels, in a new buffer (the old literal may be shared by other nodes)."""
    info = node.meta["lumos"]["gather"]
    labels, positions, arg = info["labels"], info["positions"], info["arg"]
    kept_in, kept_out = decisions.kept(labels), decisions.kept(labels[positions])
    if len(kept_in) == len(labels) and len(kept_out) == len(positions):
        return
    gm = node.graph.owning_module
    buffer = f"lumos_index_{node.name}"
    device = literal(gm, arg_at(node, arg)).device
    gm.register_buffer(buffer, torch.as_tensor(rewritten_index(kept_in, positions, kept_out),
                                               device=device), persistent=False)
    with node.graph.inserting_before(node):
        replace_arg(node, arg, node.graph.get_attr(buffer))


def _mean(node: fx.Node, decisions) -> None:
    """``mean`` over a channel dim becomes ``sum / original count`` (exact: closed
    channels are gated to zero)."""
    info = node.meta["lumos"]["mean"]
    graph = node.graph
    with graph.inserting_after(node):
        divided = graph.call_function(aten.div.Tensor, (node, float(info["count"])))
    node.replace_all_uses_with(divided, delete_user_cb=lambda user: user is not divided)
    node.target = aten.sum.dim_IntList


def _groups(node: fx.Node, decisions) -> None:
    """A depthwise convolution's ``groups`` becomes its kept channel count."""
    groups = len(decisions.kept(node.meta["lumos"]["groups"]))
    if len(node.args) > 6:
        node.args = (*node.args[:6], groups, *node.args[7:])
    else:
        node.kwargs = {**node.kwargs, "groups": groups}


def _num_groups(node: fx.Node, decisions) -> None:
    """A ``group_norm``'s group count becomes its kept group count (whole groups go)."""
    meta = node.meta["lumos"]
    kept = len(decisions.kept(meta["groups"])) // meta.get("per_group", 1)
    node.args = (node.args[0], kept, *node.args[2:])


def _factory_size(node: fx.Node, decisions) -> None:
    """``aten.zeros([s0, C, M])`` that pruned channels were written into: ``C`` becomes
    the kept count."""
    info = node.meta["lumos"]["factory"]
    sizes = list(node.args[info["arg"]])
    for dim, labels in info["sizes"].items():
        sizes[dim] = len(decisions.kept(labels))
    args = list(node.args)
    args[info["arg"]] = sizes
    node.args = tuple(args)


def _layer_norm(node: fx.Node, decisions) -> None:
    """``layer_norm``/``rms_norm`` over the last dim, or a one-group ``group_norm`` over
    ``(C, ...)``, after channels closed: the statistics of the full width, from the kept
    channels (closed ones were exactly zero). The kept channels are padded back with zeros
    to the full width, normalised by the fused op and narrowed again; the affine weight
    and bias (already sliced) apply after the narrow."""
    labels = node.meta["lumos"]["layer_norm"]["labels"]
    width, kept = len(labels), len(decisions.kept(labels))
    if kept == width:
        return
    graph, x = node.graph, node.args[0]
    rank = len(node.meta["tensor_meta"].shape)

    def arg(index, name, default=None):
        return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)

    def op(target, *args):
        return graph.call_function(target, args)
    if node.target is aten.group_norm.default:
        dim, weight, bias, eps = 1, arg(2, "weight"), arg(3, "bias"), arg(4, "eps", 1e-5)
    elif node.target is aten.rms_norm.default:
        dim, weight, bias, eps = rank - 1, arg(2, "weight"), None, arg(3, "eps")
    else:
        dim, weight, bias, eps = rank - 1, arg(2, "weight"), arg(3, "bias"), arg(4, "eps", 1e-5)
    with graph.inserting_before(node):
        padded = op(aten.constant_pad_nd.default, x,
                    [0, 0] * (rank - 1 - dim) + [0, width - kept], 0.0)
        if node.target is aten.group_norm.default:
            normed = op(aten.group_norm.default, padded, 1, None, None, eps)
        elif node.target is aten.rms_norm.default:
            normed = op(aten.rms_norm.default, padded, [width], None, eps)
        else:
            normed = op(aten.layer_norm.default, padded, [width], None, None, eps)
        y = op(aten.narrow.default, normed, dim, 0, kept)
        along = [-1] + [1] * (rank - 1 - dim)              # the affine's shape against y
        for target, affine in ((aten.mul.Tensor, weight), (aten.add.Tensor, bias)):
            if affine is not None:
                y = op(target, y, affine if len(along) == 1 else
                       op(aten.view.default, affine, along))
    node.replace_all_uses_with(y)
    graph.erase_node(node)


REWRITES = {"shape_args": _shape_args, "unflatten": _unflatten, "split": _split, "slice": _slice,
            "gather": _gather, "select": _select,
            "mean": _mean, "groups": _groups, "num_groups": _num_groups,
            "factory_size": _factory_size,
            "layer_norm": _layer_norm}


def rewrite_literals(gm: fx.GraphModule, decisions) -> None:
    for node in list(gm.graph.nodes):
        kind = node.meta.get("lumos", {}).get("codegen")
        if kind is not None:
            REWRITES[kind](node, decisions)
