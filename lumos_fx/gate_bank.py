"""All gates of a model, sampled together once per forward pass.

``gm.lumos_gates`` is a :class:`GateBank`: a ``ModuleDict`` of
:class:`~lumos_fx.gates.HardConcreteGate` by group key (so ``lumos.gates``,
``state_dict`` keys and optimizers see ordinary per-group ``log_alpha``
parameters) whose ``forward`` returns every gate vector in one tuple. When all
gates share one :class:`~lumos_fx.gates.GateConfig` (the default) the samples
come from one concatenated ``log_alpha`` vector: a dozen tensor ops per step
for the whole model instead of a dozen per gate, which is most of the gating
overhead of a small model. The penalty attaches its gradient to the same recorded
``log_alpha`` (:meth:`GateBank.link`).

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

import math

import torch
from torch import nn

from .gates import GateConfig, HardConcreteGate


def _sample(c: GateConfig, log_alphas: list[torch.Tensor]):
    """One semi-stochastic hard-concrete sample ``z`` of the concatenated ``log_alpha`` and
    ``link = log_alpha - log_alpha.detach()`` (0, with gradient 1; None without gradients).

    The values come from about a dozen tensor ops run without autograd recording; the
    gradient is attached in closed form by one recorded ``addcmul`` with ``link``:
    ``dz/dlog_alpha = (zeta - gamma) s (1 - s) / beta`` where ``0 < z < 1`` (a gate frozen
    by Eq. 1 is exactly 0 or 1 there, like a clamped one), else 0. Backward then runs in
    the autograd engine alone: a handful of recorded ops whatever the model.
    """
    lower, upper, _ = _thresholds(c)
    log_alpha = torch.cat(log_alphas)
    with torch.no_grad():
        clamped = log_alpha.clamp(-c.log_alpha_limit, c.log_alpha_limit)
        noise = torch.rand_like(clamped).logit_()        # logistic noise log(u / (1 - u))
        s = noise.add_(clamped).mul_(1.0 / c.beta).sigmoid_()
        stretched = s.mul(c.zeta - c.gamma).add_(c.gamma)
        # clamp to [0, 1]; Eq. 1: a gate above t_upper acts as 1, below t_lower as 0
        z = stretched.clamp(clamped > upper, clamped >= lower)
        # s (1 - s) where 0 < z < 1, else 0 (clamped or frozen)
        slope = torch.ops.aten.hardtanh_backward(torch.addcmul(s, s, s, value=-1.0), z, 0.0, 1.0)
    if not log_alpha.requires_grad:
        return z, None
    link = log_alpha - log_alpha.detach()
    return torch.addcmul(z, slope, link, value=(c.zeta - c.gamma) / c.beta), link


class _Link:
    """The last training forward's ``link`` (see :func:`_sample`) and the parameters it was
    recorded from. Its value is 0 and its gradient flows to those parameters whatever
    happened since (it saves no tensor, so any number of backwards may pass through it):
    a penalty computes its values from the gates as they are now and attaches its
    closed-form gradient to the link, recording none of the gates' ops again."""

    __slots__ = ("tensor", "log_alphas")

    def __init__(self, tensor: torch.Tensor, log_alphas: list):
        self.tensor, self.log_alphas = tensor, log_alphas


def gradient_link(log_alphas: list[torch.Tensor]) -> torch.Tensor | None:
    """A new ``link``, ``cat(log_alphas) - cat(log_alphas).detach()``: zero, with gradient 1
    to each ``log_alpha`` (None when there is no gradient to carry)."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in log_alphas):
        return None
    log_alpha = torch.cat(log_alphas)
    return log_alpha - log_alpha.detach()


def _thresholds(c: GateConfig) -> tuple[float, float, float]:
    """``log_alpha`` bounds of the Eq. 1 free region (``t_lower <= P(z != 0) <= t_upper``)
    and the shift of Eq. 5, ``P(z != 0) = sigmoid(log_alpha - shift)``. (Three float logs:
    not cached, since torch.compile warns about tracing through a cache.)"""
    shift = c.beta * math.log(-c.gamma / c.zeta)
    return (math.log(c.t_lower / (1 - c.t_lower)) + shift,
            math.log(c.t_upper / (1 - c.t_upper)) + shift, shift)


class GateBank(nn.ModuleDict):
    """The model's gates by key; calling it samples them all (eval: deterministic)."""

    def shared_config(self):
        """The one config of all gates when all are plain ``HardConcreteGate`` s, else None."""
        gates = list(self.values())
        first = gates[0].config if gates else None
        for gate in gates:
            if type(gate) is not HardConcreteGate or (gate.config is not first
                                                      and gate.config != first):
                return None
        return first

    def forward(self) -> tuple[torch.Tensor, ...]:
        gates = list(self.values())
        config = self.shared_config()
        if config is None or not gates or not self.training:
            return tuple(gate() for gate in gates)
        log_alphas = [g.log_alpha for g in gates]
        z, link = _sample(config, log_alphas)
        # a compiled graph's output saves tensors for its backward, so a penalty that
        # reused it could not be backpropagated after the task loss was: it makes its own
        if link is not None and not torch.compiler.is_compiling():
            self.__dict__["_last_link"] = _Link(link, log_alphas)
        else:
            self.__dict__.pop("_last_link", None)
        return torch.split(z, [t.numel() for t in log_alphas])

    def link(self, log_alphas: list[torch.Tensor]) -> torch.Tensor | None:
        """A zero tensor whose gradient flows, with factor 1, to the concatenation of
        ``log_alphas``: the last training forward's when it was recorded from these very
        parameters in this order (so a penalty adds no recorded gate ops), else a new one
        (None when grad mode is off or nothing requires grad)."""
        last = self.__dict__.get("_last_link")
        if (last is not None and torch.is_grad_enabled() and len(last.log_alphas) == len(log_alphas)
                and all(a is b for a, b in zip(last.log_alphas, log_alphas))):
            return last.tensor
        return gradient_link(log_alphas)

    def __getstate__(self):
        state = self.__dict__.copy()             # the link belongs to one step's graph
        state.pop("_last_link", None)
        return state
