"""Start the gates from what a trained model's weights say, so weak channels close first.

Fine-tuning a trained model with gates (the paper's S2) starts every gate at the same
``log_alpha``: which channels close is then decided by the first noisy steps, and a short
run spends them undoing bad choices. :func:`init_gates_from_magnitude` ranks the channels
of each gate by the weights that carry them and raises the ``log_alpha`` of the strong
ones, so the penalty or a budget closes the weak channels first (they have the least way
to go, and a gate's penalty gradient ``q (1 - q)`` is largest there).

A channel's importance is the mean, over every parameter slice it owns (the rows of the
layer that produces it, the columns of the layers that read it, its norm's scale and
shift), of the slice's L2 norm divided by that parameter's mean slice norm, so layers of
different scale count alike. Within each gate, channels get
``log_alpha = init + spread * rank / (n - 1)``: the weakest stays at the initial value, the
strongest starts ``spread`` higher. Any ``log_alpha`` at or above the default initial value
gives an eval-mode gate of exactly 1, so the gated model still computes exactly what the
original computes.

Example::

    >>> import torch
    >>> from torch import nn
    >>> import lumos_fx as lumos
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> scale = torch.tensor([0.1, 1.0, 2.0, 3.0])          # hidden channel 0 is the weakest
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(scale[:, None]), model[0].bias.copy_(scale)
    ...     _ = model[2].weight.copy_(scale[None, :])
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(8, 3),))
    >>> lumos.init_gates_from_magnitude(gated, spread=3.0)
    >>> [round(v, 1) for v in lumos.gates(gated)["0"].log_alpha.tolist()]
    [2.5, 3.5, 4.5, 5.5]
    >>> x = torch.randn(5, 3)
    >>> torch.equal(gated.eval()(x), model(x))
    True
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .cost import _global_index
from .errors import InputError
from .gates import HardConcreteGate
from .naming import gates_by_name, group_names
from .state import state_of, unwrap

__all__ = ["init_gates_from_magnitude", "channel_importance"]


def channel_importance(gated: nn.Module) -> dict[str, torch.Tensor]:
    """Each gate's per-channel weight importance (mean relative slice norm; NaN for a
    channel no parameter carries), by group name as ``lumos.gates`` names them."""
    state = state_of(gated)
    root = unwrap(gated)
    plan, keys = state.plan, state.keys
    sizes = [plan.channels.groups()[gid].size for gid in sorted(keys)]
    total = sum(sizes)
    score, count = np.zeros(total + 1), np.zeros(total + 1)
    params = dict(root.named_parameters())
    for spec in plan.params.values():
        weight = None if getattr(spec, "computed", None) else params.get(spec.path)
        if weight is None or weight.numel() == 0:
            continue
        weight = weight.detach().float()
        for dim in spec.dims:
            others = [d for d in range(weight.dim()) if d != dim]
            norms = weight.pow(2).sum(others).sqrt() if others else weight.abs()
            mean = norms.mean()
            if not torch.isfinite(mean) or mean <= 0:
                continue
            relative = (norms / mean).cpu().double().numpy()
            for labels in spec.label_sets(dim):
                slots = _global_index(np.asarray(labels), plan, keys)
                np.add.at(score, slots, relative)
                np.add.at(count, slots, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        importance = np.where(count > 0, score / count, np.nan)[:total]
    names = group_names(state)
    out, start = {}, 0
    for gid, size in zip(sorted(keys), sizes):
        out[names[gid]] = torch.from_numpy(importance[start:start + size].copy())
        start += size
    return out


def init_gates_from_magnitude(gated: nn.Module, spread: float = 3.0) -> None:
    """Set every gate's ``log_alpha`` from its channels' weight importance (in place).

    Args:
        gated: a model from ``lumos.compile``, its weights trained.
        spread: how much higher the strongest channel of a gate starts than the weakest,
            in ``log_alpha`` units (the default initial value is 2.5; a gate closes near -2.4).
    """
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not (
            math.isfinite(spread) and spread > 0):
        raise InputError(f"spread must be a positive number of log_alpha units, got {spread!r}")
    gates = gates_by_name(gated)
    for name, importance in channel_importance(gated).items():
        gate = gates[name]
        if not isinstance(gate, HardConcreteGate):
            continue
        config = gate.config
        if config.init_log_alpha + spread > config.log_alpha_limit:
            raise InputError(f"spread {spread} puts log_alpha above its limit "
                             f"{config.log_alpha_limit}; use spread <= "
                             f"{config.log_alpha_limit - config.init_log_alpha:g}")
        known = torch.isfinite(importance)
        # channels no parameter carries sit in the middle of the ranking
        values = torch.where(known, importance, importance[known].median()
                             if known.any() else torch.zeros(()))
        n = values.numel()
        rank = torch.empty(n, dtype=torch.float64)
        rank[torch.argsort(values, stable=True)] = torch.arange(n, dtype=torch.float64)
        fraction = rank / (n - 1) if n > 1 else torch.ones(n, dtype=torch.float64)
        with torch.no_grad():
            gate.log_alpha.copy_((config.init_log_alpha + spread * fraction).to(gate.log_alpha))
