"""Rules for ``einsum``, ``matmul``, ``addmm``, ``baddbmm``, ``nn.Bilinear`` and the
vector products: contractions over channel dims (DeepONet, FNO spectral weights,
attention written as ``q @ k.transpose(-2, -1)``).

Each letter of the equation is one channel space candidate. A letter kept in the
output unifies the channels of every operand that has it (a parameter operand is
a follower and is sliced along); a letter only a parameter has creates the output
channels, like a linear layer's rows. A contracted letter is a sum of products,
so zero-padding invariant: the channels are gated at an activation operand and,
when a parameter also has the letter, the gate folds into it on extraction
(``einsum("bix,iox->box", x, w)`` is a linear layer over ``i``, and so is
``x @ w.t()``; DeepONet's
``einsum("bi,bi->b", branch, trunk)`` gates ``branch``).

Example::

    >>> from lumos_fx.rules.einsum import parse
    >>> parse("b i x , i o x -> b o x", 2)
    (['bix', 'iox'], 'box')
"""
from __future__ import annotations

import math

from .context import split_path
from .registry import REGISTRY, aten, packets


def parse(equation: str, count: int):
    """``(input specs, output spec)``, or None for forms this rule does not handle."""
    equation = equation.replace(" ", "")
    if "..." in equation or "->" not in equation:
        return None
    inputs, output = equation.split("->")
    specs = inputs.split(",")
    return (specs, output) if len(specs) == count else None


@REGISTRY.ops(aten.einsum.default)
def einsum(ctx, node):
    operands = list(node.args[1])
    parsed = parse(node.args[0], len(operands))
    if parsed is None or any(len(s) != len(ctx.shape(o)) for s, o in zip(parsed[0], operands)):
        ctx.pin_inputs(node, f"{node.name}: einsum with ellipsis or an unusual equation")
        return {}
    return contract(ctx, node, operands, [(1, k) for k in range(len(operands))], *parsed)


@REGISTRY.ops(aten.matmul.default, aten.bmm.default, aten.mm.default)
def matmul(ctx, node):
    """``a @ b`` as the contraction ``...ij,...jk->...ik``; batch dims broadcast as in
    torch (a 2-D ``b`` is a weight shared by every batch entry, like a linear layer;
    ARMA's ``x.unsqueeze(0) @ w`` applies each of ``K`` stacked weights)."""
    a, b = node.args[:2]
    sa, sb = ctx.shape(a), ctx.shape(b)
    ra, rb = len(sa), len(sb)
    batch = "abcdefgh"[:max(ra, rb) - 2]
    pairs = zip(reversed(sa[:-2]), reversed(sb[:-2]))
    if ra < 2 or rb < 2 or any(m != n and 1 not in (m, n) for m, n in pairs):
        ctx.pin_inputs(node, f"{node.name}: matmul with vector operands")
        return {}
    specs = [batch[len(batch) - (ra - 2):] + "ij", batch[len(batch) - (rb - 2):] + "jk"]
    return contract(ctx, node, [a, b], [0, 1], specs, batch + "ik")


@REGISTRY.ops(aten.addmm.default)
def addmm(ctx, node):
    """``bias + mat1 @ mat2`` (Hugging Face's ``Conv1D``, a weight stored ``(in, out)``):
    the product as :func:`matmul`, a parameter ``bias`` of shape ``(out,)`` follows the
    output channels, an added tensor of the product's shape joins them (a residual);
    any other added tensor pins them."""
    bias, mat1, mat2 = node.args[:3]
    out = contract(ctx, node, [mat1, mat2], [1, 2], ["ij", "jk"], "ik")
    added = ctx.of(bias) or {}
    if ctx.attr(bias) is None and ctx.shape(bias) == ctx.shape(node) and 0 not in added \
            and (out.get(1) is None) == (added.get(1) is None):
        # a residual of the same shape (GCN2Conv's beta * h @ W + (1 - beta) * h)
        if out.get(1) is not None:
            ctx.unify(out[1], added[1], f"{node.name}: addmm adds a tensor of these channels")
        return out
    if out.get(1) is not None and not (ctx.attr(bias) is not None and ctx.shape(bias) == (
            ctx.shape(node)[1],)):
        ctx.pin(out[1], f"{node.name}: addmm adds a tensor that is not a bias")
    elif out.get(1) is not None:
        ctx.param(ctx.attr(bias), {0: out[1]})
    ctx.pin_value(bias, f"{node.name}: addmm's added tensor")
    return out


@REGISTRY.ops(aten.baddbmm.default)
def baddbmm(ctx, node):
    """``beta * input + alpha * (batch1 @ batch2)`` (BLOOM's ALiBi attention scores): the
    product as :func:`matmul` (its contracted dim gated, as in ``q @ k``); channels the
    product keeps are pinned, as is the added tensor."""
    added, batch1, batch2 = node.args[:3]
    out = contract(ctx, node, [batch1, batch2], [1, 2], ["aij", "ajk"], "aik")
    for labels in out.values():
        ctx.pin(labels, f"{node.name}: baddbmm adds a tensor to its product")
    ctx.pin_value(added, f"{node.name}: baddbmm's added tensor")
    return out


def contract(ctx, node, operands, arg_paths, specs, output, selects: str = ""):
    """The channel facts of a contraction ``specs -> output`` over ``operands``
    (``arg_paths``: where each operand sits in ``node.args``). An operand that is a
    parameter, or a view of the whole of its dim (``x @ w.t()``, ``x @ w[0]``), is a
    weight there: sliced, never gated. Letters in ``selects`` pick one entry per row
    instead of summing over them (a mixture of experts' expert dim): a weight's FLOPs
    are divided by their sizes."""
    uses: dict[str, list[tuple[int, int]]] = {}
    for k, spec in enumerate(specs):
        for d, letter in enumerate(spec):
            uses.setdefault(letter, []).append((k, d))
    sizes = {letter: max(ctx.shape(operands[k])[d] for k, d in places)
             for letter, places in uses.items()}
    views = [ctx.weight_view(o) for o in operands]

    def weight_dim(k, d):
        """The parameter dim operand ``k``'s dim ``d`` is, or None."""
        return None if views[k] is None else views[k][1][d]

    out, param_dims = {}, {}
    for letter, places in uses.items():
        labels = _unified(ctx, node, operands, places, weight_dim)
        params = [(k, d) for k, d in places if weight_dim(k, d) is not None]
        if labels is None and letter in output and params and \
                len(params) == len(places):        # only a weight has it: new channels
            k, d = params[0]
            path = views[k][0]
            labels = ctx.produce(node, sizes[letter], key=f"{path}:{weight_dim(k, d)}",
                                 name=split_path(path)[0] or path)
        if labels is None:
            continue
        if letter in output:
            out[output.index(letter)] = labels
        else:
            _consume(ctx, node, operands, arg_paths, places, params, labels, views, weight_dim)
        for k, d in params:
            param_dims.setdefault(k, {})[weight_dim(k, d)] = labels
    for k, dims in param_dims.items():        # one record per weight, all its labeled dims
        others = [s for letter, s in sizes.items() if letter not in specs[k]]
        flops = 2.0 * math.prod(others) / max(sizes.get(specs[0][0], 1), 1) / math.prod(
            sizes.get(letter, 1) for letter in selects)
        used = math.prod(ctx.shape(operands[k])) / max(math.prod(ctx.shape(
            ctx.param_node(operands[k]))), 1)          # the share of it this view holds
        ctx.param(views[k][0], dims, flops_per_entry=flops * used)
    return out


def _unified(ctx, node, operands, places, weight_dim):
    """The labels of a letter, unified over the operands that carry it."""
    found = [(ctx.of(operands[k]) or {}).get(d) for k, d in places]
    labeled = [lab for lab in found if lab is not None]
    if not labeled:
        return None
    for lab in labeled[1:]:
        ctx.unify(labeled[0], lab, f"{node.name}: einsum joins fixed channels")
    for (k, d), lab in zip(places, found):
        if lab is None and weight_dim(k, d) is None and ctx.shape(operands[k])[d] != 1:
            ctx.pin(labeled[0], f"{node.name}: einsum with an unlabeled tensor")
    return labeled[0]


def _consume(ctx, node, operands, arg_paths, places, params, labels, views, weight_dim):
    """Gate a contracted channel dim at its first labeled activation operand."""
    for k, d in places:
        if weight_dim(k, d) is None and (ctx.of(operands[k]) or {}).get(d) is not None:
            fold = None
            if params:
                pk, pd = params[0]
                fold = (*split_path(views[pk][0]), weight_dim(pk, pd))
            ctx.consume(node, arg_paths[k], d, fold=fold)
            return


_VECTOR_PRODUCTS = {"outer": (["i", "j"], "ij"), "ger": (["i", "j"], "ij"),
                    "mv": (["ij", "j"], "i"), "dot": (["i", "i"], ""), "vdot": (["i", "i"], "")}


def vector_product(ctx, node):
    """``outer``, ``mv``, ``dot``, ``vdot``: contractions with fixed subscripts."""
    specs, output = _VECTOR_PRODUCTS[node.target.overloadpacket.__name__]
    return contract(ctx, node, list(node.args[:2]), [0, 1], specs, output)


REGISTRY.add(vector_product, packets(*_VECTOR_PRODUCTS))


@REGISTRY.ops(aten.bilinear.default)
def bilinear(ctx, node):
    """``nn.Bilinear``: ``y_o = x1_i W_oij x2_j + b_o``, a contraction whose output
    channels only the weight has (new channels, like a linear layer's rows)."""
    x1, x2, weight = node.args[:3]
    lead = "abcdefgh"[:len(ctx.shape(x1)) - 1]
    out = contract(ctx, node, [x1, x2, weight], [0, 1, 2],
                   [lead + "i", lead + "j", "oij"], lead + "o")
    bias = ctx.arg(node, 3, "bias")
    if bias is not None:
        path = ctx.weight_in_place(bias)
        if path is not None and len(lead) in out:
            ctx.param(path, {0: out[len(lead)]})
        else:
            ctx.pin(out.get(len(lead)), f"{node.name}: bilinear with a computed bias")
    return out
