"""Rules for recurrent layers (``aten.lstm``, ``aten.gru``, ``aten.rnn_tanh``/``rnn_relu``)
and their one-step cells (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``).

The hidden size is one channel group for every layer and direction (PyTorch's
recurrent ops take one hidden size). Hidden channel ``j`` owns rows ``j, H + j, ...``
of every ``weight_ih``/``weight_hh``/bias (one block per gate: 4 for an LSTM, 3 for
a GRU) and column ``j`` of every ``weight_hh``. The gate multiplies the columns
that read channel ``j`` (the recurrence through ``weight_hh``, the next layer's
``weight_ih``, and every consumer of the output), so a closed channel still runs
but nothing reads it: removing its rows and columns is exact. A first layer reads
the input features through its ``weight_ih`` columns. Zero initial states that
the module creates (``torch.zeros(layers, batch, H)``) follow the kept size
(see :mod:`lumos_fx.rules.factory`).

A cell's state input ``hx`` is a tensor of the model's (AttentiveFP feeds the
previous node states to a ``GRUCell``): its channels are the hidden ones, so its
group joins the hidden group. The cell reads it through ``weight_hh`` columns
(gated) and, for a GRU's ``z * h`` and an LSTM's ``f * c``, elementwise into the
same hidden channel only, whose output every consumer gates: closing channel ``j``
still leaves nothing that reads it.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.recurrent import recurrent
    >>> REGISTRY.find(torch.ops.aten.lstm.input) is recurrent
    True
    >>> REGISTRY.find(torch.ops.aten.gru_cell.default).__name__
    'recurrent_cell'
"""
from __future__ import annotations

import numpy as np
from torch import fx

from .context import split_path
from .layers import _batched_positions
from .registry import REGISTRY, aten

_GATE_BLOCKS = {aten.lstm.input: 4, aten.gru.input: 3, aten.rnn_tanh.input: 1,
                aten.rnn_relu.input: 1}
_CELL_BLOCKS = {aten.lstm_cell.default: 4, aten.gru_cell.default: 3,
                aten.rnn_tanh_cell.default: 1, aten.rnn_relu_cell.default: 1}


@REGISTRY.ops(*_GATE_BLOCKS)
def recurrent(ctx, node):
    x_node, states, params = node.args[0], node.args[1], list(node.args[2])
    has_biases, layers, _, _, bidirectional, batch_first = node.args[3:9]
    states = list(states) if isinstance(states, (list, tuple)) else [states]
    directions, per_layer = (2 if bidirectional else 1), (4 if has_biases else 2)
    paths = [ctx.attr(p) for p in params]
    outputs = len(states) + 1
    if None in paths or len(params) != layers * directions * per_layer:
        ctx.pin_inputs(node, f"{node.name}: {node.target} with computed or projected weights")
        return tuple({} for _ in range(outputs))
    x = ctx.of(x_node) or {}
    shape = ctx.shape(x_node)
    last = len(shape) - 1
    for d, lab in x.items():
        if d != last:
            ctx.pin(lab, f"{node.name}: a recurrent layer's time or batch dim carries channels")
    hidden = ctx.produce(node, ctx.shape(params[1])[1], key=f"{paths[1]}:1",
                         name=split_path(paths[1])[0])
    rows = np.tile(hidden, _GATE_BLOCKS[node.target])
    steps = shape[1 if batch_first else 0] if len(shape) == 3 else shape[0]
    both = np.concatenate([hidden] * directions)
    for layer in range(layers):
        for direction in range(directions):
            base = (layer * directions + direction) * per_layer
            layer_input = x.get(last) if layer == 0 else both
            ctx.param(paths[base], {0: rows, 1: layer_input}, flops_per_entry=2 * steps)
            ctx.param(paths[base + 1], {0: rows, 1: hidden}, flops_per_entry=2 * steps)
            if has_biases:
                ctx.param(paths[base + 2], {0: rows})
                ctx.param(paths[base + 3], {0: rows})
            w_ih, w_hh = (*split_path(paths[base]), 1), (*split_path(paths[base + 1]), 1)
            if layer == 0:
                ctx.consume(node, 0, last, fold=w_ih, weight_arg=(2, base))
            else:
                ctx.consume_labels(node, (2, base), 1, both, fold=w_ih, weight_arg=(2, base))
            ctx.consume_labels(node, (2, base + 1), 1, hidden, fold=w_hh, weight_arg=(2, base + 1))
    for state in states:
        _initial_state(ctx, node, state, hidden)
    state_labels = {len(ctx.shape(states[0])) - 1: hidden}
    return ({last: both}, *(dict(state_labels) for _ in states))


@REGISTRY.ops(*_CELL_BLOCKS)
def recurrent_cell(ctx, node):
    """One step, ``(input, hx, weight_ih, weight_hh[, bias_ih, bias_hh])``; an LSTM cell's
    ``hx`` is ``[h, c]`` and it returns ``(h', c')``."""
    x_node, hx = node.args[0], node.args[1]
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    outputs = 2 if node.target is aten.lstm_cell.default else 1
    weights = [ctx.arg(node, i) for i in (2, 3)]
    biases = [b for b in (ctx.arg(node, 4, "b_ih"), ctx.arg(node, 5, "b_hh")) if b is not None]
    paths = [ctx.attr(t) for t in weights + biases]
    if None in paths:
        ctx.pin_inputs(node, f"{node.name}: {node.target} with computed weights")
        return {} if outputs == 1 else ({}, {})
    w_ih, w_hh, *bias_paths = paths
    x, shape = ctx.of(x_node) or {}, ctx.shape(x_node)
    last = len(shape) - 1
    for d, lab in x.items():
        if d != last:
            ctx.pin(lab, f"{node.name}: a recurrent cell's batch dim carries channels")
    hidden = ctx.produce(node, ctx.shape(weights[1])[1], key=f"{w_hh}:1",
                         name=split_path(w_hh)[0])
    rows = np.tile(hidden, _CELL_BLOCKS[node.target])
    positions = _batched_positions(shape, 0, last)
    ctx.param(w_ih, {0: rows, 1: x.get(last)}, flops_per_entry=2 * positions)
    ctx.param(w_hh, {0: rows, 1: hidden}, flops_per_entry=2 * positions)
    for bias in bias_paths:
        ctx.param(bias, {0: rows})
    ctx.consume(node, 0, last, fold=(*split_path(w_ih), 1), weight_arg=2)
    ctx.consume_labels(node, 3, 1, hidden, fold=(*split_path(w_hh), 1), weight_arg=3)
    for state in states:
        _initial_state(ctx, node, state, hidden)
    out = {last: hidden}
    return out if outputs == 1 else (out, dict(out))


def _initial_state(ctx, node, state: fx.Node, hidden) -> None:
    """A zero state the module made (a factory, see :mod:`lumos_fx.rules.factory`) or
    a given one with channel labels joins the hidden group; an unlabeled one pins it."""
    given = (ctx.of(state) or {}).get(len(ctx.shape(state)) - 1)
    if given is not None:
        ctx.unify(hidden, given, f"{node.name}: initial state")
    else:
        ctx.pin(hidden, f"{node.name}: an initial state without channel labels")
