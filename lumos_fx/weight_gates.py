"""Layers that apply their input gates to the weight, not to the input.

A gate on a convolution's input channels multiplies a whole ``(N, C, H, W)``
activation, forward and backward: several passes over the largest tensors of a
CNN. The same gate on the weight's input dim touches ``C_out x C x k x k``
numbers instead, and ``conv(x * z) == conv(x, W * z)`` exactly (the layer is
linear in its input channels; the bias does not depend on them). A ``Linear``
gated this way also spares the backward pass the gradient of its input when that
input is the model's data. So in the gated model, a ``Linear`` or ``Conv*d`` read
by exactly one gated use gets one of these subclasses: same parameters, same
``state_dict`` keys, ``isinstance`` still true, and the gate vectors come in as
extra arguments. Extraction folds the deterministic gate into the weight and
turns the module back into its original class.

Example::

    >>> import torch
    >>> from lumos_fx.weight_gates import weight_gated
    >>> conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    >>> x, z = torch.randn(2, 3, 5, 5), torch.tensor([1.0, 0.0, 0.5])
    >>> reference = conv(x * z.view(1, -1, 1, 1))
    >>> conv.__class__ = weight_gated(type(conv))
    >>> torch.allclose(conv(x, z), reference, atol=1e-6)
    True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gate_multiplier(gates: tuple[torch.Tensor, ...], index: torch.Tensor | None) -> torch.Tensor:
    """The per-position gate values: the one gate itself, or ``cat(gates, [1])[index]``."""
    if index is None:
        return gates[0]
    one = torch.ones(1, dtype=gates[0].dtype, device=gates[0].device)
    return torch.cat([*gates, one])[index]


class _WeightGated:
    """The layer's weight times the gate vector on its input dim (dim 1)."""

    def gated_weight(self, gates: tuple[torch.Tensor, ...], index: torch.Tensor | None):
        z = gate_multiplier(gates, index).to(self.weight.dtype)
        shape = [1] * self.weight.dim()
        shape[1] = -1
        return self.weight * z.view(shape)


class _WeightGatedConv(_WeightGated):
    def forward(self, x: torch.Tensor, *gates: torch.Tensor, index: torch.Tensor | None = None):
        return self._conv_forward(x, self.gated_weight(gates, index), self.bias)


class WeightGatedLinear(_WeightGated, nn.Linear):
    def forward(self, x: torch.Tensor, *gates: torch.Tensor, index: torch.Tensor | None = None):
        return F.linear(x, self.gated_weight(gates, index), self.bias)


class WeightGatedConv1d(_WeightGatedConv, nn.Conv1d):
    pass


class WeightGatedConv2d(_WeightGatedConv, nn.Conv2d):
    pass


class WeightGatedConv3d(_WeightGatedConv, nn.Conv3d):
    pass


_GATED = {nn.Linear: WeightGatedLinear, nn.Conv1d: WeightGatedConv1d,
          nn.Conv2d: WeightGatedConv2d, nn.Conv3d: WeightGatedConv3d}
ORIGINAL = {gated: plain for plain, gated in _GATED.items()}


def weight_gated(cls: type) -> type | None:
    """The weight-gated subclass for a plain ``Conv1d/2d/3d`` class, else None."""
    return _GATED.get(cls)


def can_gate_weight(module: nn.Module) -> bool:
    """Whether input gates fold into this module's weight: a plain ``Linear``, or a
    convolution without groups (every padding mode pads each channel on its own, so
    it commutes with a per-channel scale)."""
    return weight_gated(type(module)) is not None and getattr(module, "groups", 1) == 1
