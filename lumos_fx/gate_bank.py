"""All gates of a model, sampled together once per forward pass.

``gm.lumos_gates`` is a :class:`GateBank`: a ``ModuleDict`` of
:class:`~lumos_fx.gates.HardConcreteGate` by group key (so ``lumos.gates``,
``state_dict`` keys and optimizers see ordinary per-group ``log_alpha``
parameters) whose ``forward`` returns every gate vector in one tuple. When all
gates share one :class:`~lumos_fx.gates.GateConfig` (the default) the samples
come from one concatenated ``log_alpha`` vector: a dozen tensor ops per step
for the whole model instead of a dozen per gate, which is most of the gating
overhead of a small model.

Example::

    >>> import torch
    >>> from lumos_fx.gate_bank import GateBank
    >>> from lumos_fx.gates import HardConcreteGate
    >>> bank = GateBank({"a": HardConcreteGate(2), "b": HardConcreteGate(3)})
    >>> [z.tolist() for z in bank.eval()()]
    [[1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> [tuple(z.shape) for z in bank.train()()]
    [(2,), (3,)]
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .gates import GateConfig, HardConcreteGate


class _HardConcreteSample(torch.autograd.Function):
    """One semi-stochastic hard-concrete sample of a concatenated ``log_alpha``,
    computed without autograd recording and differentiated in closed form:
    ``dz/dlog_alpha = (zeta - gamma) s (1 - s) / beta`` where ``0 < z < 1`` (a gate
    frozen by Eq. 1 is exactly 0 or 1 there, like a clamped one), else 0. About
    twenty in-place tensor ops with Python-number arguments, whatever the model."""

    @staticmethod
    def forward(ctx, config: GateConfig, sizes: list[int], *log_alphas: torch.Tensor):
        c = config
        lower, upper = _frozen_thresholds(c)
        log_alpha = torch.cat(log_alphas).clamp_(-c.log_alpha_limit, c.log_alpha_limit)
        s = torch.rand_like(log_alpha).logit_()      # logistic noise log(u / (1 - u))
        s = s.add_(log_alpha).mul_(1.0 / c.beta).sigmoid_()
        z = s.mul(c.zeta - c.gamma).add_(c.gamma).clamp_(0.0, 1.0)
        z.masked_fill_(log_alpha > upper, 1.0).masked_fill_(log_alpha < lower, 0.0)
        inside = (z > 0.0).logical_and_(z < 1.0)
        slope = torch.addcmul(s, s, s, value=-1.0).mul_(inside).mul_((c.zeta - c.gamma) / c.beta)
        ctx.save_for_backward(slope)
        ctx.sizes = sizes
        return z

    @staticmethod
    def backward(ctx, grad_z: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return (None, None, *torch.split(grad_z * slope, ctx.sizes))


@functools.lru_cache(maxsize=64)
def _frozen_thresholds(c: GateConfig) -> tuple[float, float]:
    """``log_alpha`` bounds of the Eq. 1 free region: ``t_lower <= P(z != 0) <= t_upper``."""
    shift = c.beta * math.log(-c.gamma / c.zeta)
    return math.log(c.t_lower / (1 - c.t_lower)) + shift, math.log(c.t_upper / (1 - c.t_upper)) + shift


class GateBank(nn.ModuleDict):
    """The model's gates by key; calling it samples them all (eval: deterministic)."""

    def shared_config(self):
        """The one config of all gates when all are plain ``HardConcreteGate`` s, else None."""
        gates = list(self.values())
        first = gates[0].config if gates else None
        for gate in gates:
            if type(gate) is not HardConcreteGate or gate.config != first:
                return None
        return first

    def forward(self) -> tuple[torch.Tensor, ...]:
        gates = list(self.values())
        config = self.shared_config()
        if config is None or len(gates) < 2 or not self.training:
            return tuple(gate() for gate in gates)
        sizes = [g.size for g in gates]
        z = _HardConcreteSample.apply(config, sizes, *[g.log_alpha for g in gates])
        return torch.split(z, sizes)
