"""FLOP formulas for ops ``FlopCounterMode`` does not count.

``torch.utils.flop_counter`` counts matmuls, convolutions and attention. A CPU
``nn.LSTM`` runs as ``aten.mkldnn_rnn_layer`` (one call per layer and direction),
which it skips, so a recurrent model's report showed only its head's FLOPs. The
formulas here count the same thing the built-in ones do: the multiply-adds of the
layer's matrix products, ``2 * rows * (4H * input + 4H * H)`` for an LSTM layer
over ``rows = time * batch`` steps (a GRU and a plain RNN decompose into counted
matmuls).

Example::

    >>> import torch
    >>> from torch.utils.flop_counter import FlopCounterMode
    >>> from lumos_fx.flop_formulas import EXTRA_FLOP_FORMULAS
    >>> lstm = torch.nn.LSTM(5, 12)
    >>> with torch.no_grad(), FlopCounterMode(display=False,
    ...                                       custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
    ...     _ = lstm(torch.randn(7, 2, 5))
    >>> counter.get_total_flops() == 2 * 7 * 2 * (48 * 5 + 48 * 12)
    True
"""
from __future__ import annotations

import math

import torch

aten = torch.ops.aten

__all__ = ["EXTRA_FLOP_FORMULAS"]


def _rnn_layer_flops(input_shape, weight_ih_shape, weight_hh_shape, *args, **kwargs) -> int:
    """One ``mkldnn_rnn_layer`` call: ``input @ W_ih^T`` and ``h @ W_hh^T`` at every step."""
    rows = math.prod(input_shape[:-1])
    return 2 * rows * weight_ih_shape[0] * (weight_ih_shape[1] + weight_hh_shape[1])


EXTRA_FLOP_FORMULAS = {}
if hasattr(aten, "mkldnn_rnn_layer"):
    EXTRA_FLOP_FORMULAS[aten.mkldnn_rnn_layer] = _rnn_layer_flops     # keyed by packet
