"""Weights a layer computes from parameters alone: slice the weight it computes.

``weight_norm`` (``g * v / ||v||``), a standardized weight
(BiT's ``StdConv2d``), an equalized learning rate (``w * c``): the layer reads a
tensor that no input reaches. Its rows and columns
are channels like a stored weight's, but slicing the parameters behind it would
change it (removing a column of ``v`` changes ``||v||``). So the rule treats the
computed tensor as a parameter of its own: extraction evaluates it once, with
every parameter at its trained value, stores it as a plain parameter and
slices that (:func:`lumos_fx.passes.materialize.materialize_weights`). The
extracted layer then holds the weight it computed, exact, and no longer the
parametrization (a fine-tune of it trains the plain weight). A computed weight
larger than the parameters it comes from (a low-rank ``A @ B``) would make the
extracted model larger: it pins, as does one updated in place as it is computed
(``spectral_norm``'s power iteration in training).

An elementwise op meets such tensors too: a KAN layer divides its input by knot
differences ``grid[:, p:-1] - grid[:, :-(p + 1)]``, one row per input feature.
They are stored the same way (as ``owner.constant``, ``owner.constant_1``, ...),
as a buffer when computed from buffers alone, so they add no parameter.

The name is the layer's own: ``a.weight`` for a ``weight_norm``-ed ``a``
(whose stored tensors are ``a.parametrizations.weight.original0/1``), or
``b.weight_materialized`` when ``b.weight`` is already a tensor of the model
(StdConv standardizes its stored ``b.weight``).

Example::

    >>> import torch
    >>> from torch.nn.utils.parametrizations import weight_norm
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(weight_norm(torch.nn.Linear(3, 8)), torch.nn.Tanh(),
    ...                             torch.nn.Linear(8, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(2, 3),))
    >>> lumos.gates(gated)["0"].size                  # the weight_norm-ed layer's rows
    8
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx

from .context import lookup

#: the suffix of a computed weight's name when the layer's own name is taken
SUFFIX = "_materialized"


def _sources(value: fx.Node) -> list[fx.Node] | None:
    """The ``get_attr`` nodes ``value`` is computed from when every step is a
    deterministic op on parameters and buffers (no input, no random draw, no in-place
    update, no module call); else None."""
    seen, frontier, sources = set(), [value], []
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "get_attr":
            sources.append(node)
            continue
        if node.op != "call_function" or node.is_impure(impure_random=True):
            return None
        frontier.extend(node.all_input_nodes)
    return sources


def computed_weight(ctx, layer: fx.Node, value: Any, argument: str,
                    numbered: bool = False, as_buffer: bool = False) -> str | None:
    """The name under which ``layer``'s ``argument`` (``"weight"``, ``"bias"``) is sliced
    when ``value`` is computed from parameters alone and read by ``layer`` only; None
    otherwise (the layer then pins). ``numbered``: a taken name gets ``_1``, ``_2``, ...
    (an op's several computed operands) instead of the suffix. It is stored as a buffer
    when computed from buffers alone, or ``as_buffer``."""
    if not (isinstance(value, fx.Node) and value.op == "call_function"
            and len(value.users) == 1 and ctx.shape(value) is not None):
        return None
    sources = _sources(value)
    tensors = [ctx.tensor(node) for node in set(sources or ())]
    # stored, a low-rank product A @ B would be larger than A and B: it pins instead
    if sources is None or not all(isinstance(t, torch.Tensor) for t in tensors) or \
            math.prod(ctx.shape(value)) > sum(t.numel() for t in tensors):
        return None
    known = ctx.computed_weights.get((ctx.training, value.name))
    if known is not None:
        return known
    stack = layer.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    path = f"{owner}.{argument}" if owner else argument
    # each computed weight its own name, claimed in the same order in both graphs
    claimed = {p for (training, _), p in ctx.computed_weights.items()
               if training == ctx.training}
    base, count = path, 0
    while _exists(ctx.root, path) or path in claimed or (
            path in ctx.params and ctx.params[path].computed is None):
        count += 1
        path = f"{base}_{count}" if numbered else path + SUFFIX
    ctx.computed_weights[(ctx.training, value.name)] = path
    ctx.materialize(path, value, constant=as_buffer or not any(
        isinstance(t, torch.nn.Parameter) for t in tensors))
    return path


def _exists(root: fx.GraphModule, path: str) -> bool:
    try:
        lookup(root, path)
    except AttributeError:
        return False
    return True
