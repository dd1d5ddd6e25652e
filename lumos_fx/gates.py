"""Hard-concrete L0 gates (LUMOS paper, Section V, Eq. 1-5).

A :class:`HardConcreteGate` holds one learnable ``log_alpha`` per channel of
the group it gates. Calling it (no arguments) returns the gate vector ``z``:

* training: a hard-concrete sample
  ``s = sigmoid((log u - log(1-u) + log_alpha) / beta)``,
  ``z = clamp(s * (zeta - gamma) + gamma, 0, 1)``, made *semi-stochastic* as in
  Eq. 1: channels whose open probability ``P(z != 0)`` is above ``t_upper``
  act as 1, below ``t_lower`` as 0;
* eval: the deterministic ``z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``.

The default initial ``log_alpha`` (2.5) makes every eval gate exactly 1, so a
freshly compiled model computes exactly what the original computes.

Example::

    >>> import torch
    >>> from lumos_fx.gates import HardConcreteGate
    >>> gate = HardConcreteGate(4)
    >>> gate.eval()().tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> with torch.no_grad():
    ...     gate.log_alpha[1] = -5.0
    >>> gate.eval()().tolist()
    [1.0, 0.0, 1.0, 1.0]
    >>> round(float(gate.open_probability()[0].detach()), 3)
    0.984
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GateConfig:
    """Constants of the hard-concrete distribution and the semi-stochastic rule.

    ``gamma``/``zeta`` stretch the concrete distribution, ``beta`` is its
    temperature (paper Eq. 2-5). ``t_lower``/``t_upper`` are the Eq. 1
    thresholds on ``P(z != 0)``. ``log_alpha`` is clamped to
    ``[-log_alpha_limit, log_alpha_limit]`` in the forward pass only.
    """

    gamma: float = -0.1
    zeta: float = 1.1
    beta: float = 2.0 / 3.0
    init_log_alpha: float = 2.5
    t_lower: float = 0.02
    t_upper: float = 0.999
    log_alpha_limit: float = 8.0


def clamp_straight_through(log_alpha: torch.Tensor, limit: float) -> torch.Tensor:
    """``log_alpha`` clamped to ``[-limit, limit]`` in value but not in gradient:
    a gate that an optimizer step pushed past the limit still feels the penalty
    and the loss, instead of freezing there forever."""
    with torch.no_grad():
        shift = log_alpha.clamp(-limit, limit) - log_alpha
    return log_alpha + shift


class HardConcreteGate(nn.Module):
    """One gate vector for a channel group.

    Args:
        size: number of channels in the group.
        config: distribution constants; defaults follow the paper.

    Shapes:
        output: ``(size,)``
    """

    def __init__(self, size: int, config: GateConfig | None = None):
        super().__init__()
        self.config = config or GateConfig()
        self.log_alpha = nn.Parameter(torch.full((size,), float(self.config.init_log_alpha)))

    @property
    def size(self) -> int:
        return self.log_alpha.numel()

    def _clamped_log_alpha(self) -> torch.Tensor:
        return clamp_straight_through(self.log_alpha, self.config.log_alpha_limit)

    def open_probability(self) -> torch.Tensor:
        """``P(z != 0)`` per channel (paper Eq. 5); differentiable."""
        c = self.config
        return torch.sigmoid(self._clamped_log_alpha() - c.beta * math.log(-c.gamma / c.zeta))

    def deterministic(self) -> torch.Tensor:
        """The eval-mode gate values."""
        c = self.config
        s = torch.sigmoid(self._clamped_log_alpha())
        return (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)

    def sample(self) -> torch.Tensor:
        """A semi-stochastic hard-concrete sample (training mode)."""
        c = self.config
        log_alpha = self._clamped_log_alpha()
        u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / c.beta)
        z = (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)
        with torch.no_grad():
            q = self.open_probability()
        z = torch.where(q > c.t_upper, torch.ones_like(z), z)
        return torch.where(q < c.t_lower, torch.zeros_like(z), z)

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic()

    def extra_repr(self) -> str:
        return f"size={self.size}"
