"""How much of a model can be pruned at all, said at compile time.

Channels that a rule pinned (an op with no rule, a model output, a norm over
several dims) can never shrink, so the smallest model extraction can produce
is the expected cost with every gate closed. ``compile`` warns when less than
half of the parameters can be pruned, naming the ops that pinned the rest, and
refuses a budget below that smallest model: the controller would otherwise
drive every gate shut and extract a constant.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> from lumos_fx.prunability import smallest_fraction
    >>> gated = lumos.compile(torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
    ...                                           torch.nn.Linear(32, 1)),
    ...                       example_inputs=(torch.randn(4, 8),))
    >>> round(smallest_fraction(gated, "params"), 3)      # the output layer's bias
    0.003
"""
from __future__ import annotations

import warnings
from collections import Counter

import torch

from .errors import InputError


def smallest_fractions(gated) -> dict[str, float]:
    """Fractions of the parameters and FLOPs left with every gate closed."""
    cost = gated.lumos_cost
    closed = {key: torch.zeros_like(gate.log_alpha, dtype=cost.weights.dtype)
              for key, gate in gated.lumos_gates.items()}
    with torch.no_grad():
        params, flops = cost.evaluate(cost.slots(closed).to(cost.weights.dtype))
    return {"params": float(params) / max(float(cost.total_params), 1.0),
            "flops": float(flops) / max(float(cost.total_flops), 1.0)}


def smallest_fraction(gated, metric: str = "params") -> float:
    """Fraction of ``metric`` (``"params"`` or ``"flops"``) left with every gate closed."""
    return smallest_fractions(gated)[metric]


def pin_reasons(plan, limit: int = 5) -> list[str]:
    """The most common reasons channels were pinned (model outputs aside)."""
    counts = Counter(group.pinned for group in plan.channels.groups()
                     if group.pinned and group.pinned != "model output")
    return [reason for reason, _ in counts.most_common(limit)]


def check_prunable(gated, plan, budget) -> None:
    """Warn when under half the parameters can be pruned; refuse an unreachable budget."""
    fractions = smallest_fractions(gated)
    smallest = fractions["params"]
    reasons = pin_reasons(plan)
    why = ("; pinned by: " + "; ".join(reasons)) if reasons else ""
    if budget is not None:
        reachable = fractions[budget.metric]
        if budget.target < reachable:
            raise InputError(
                f"budget {budget.metric}={budget.target:g} is below the smallest model "
                f"extraction can produce ({reachable:.3f} of the {budget.metric} with every "
                f"gate closed){why}. Ask for at least {reachable:.3f}.")
    if 1.0 - smallest < 0.5:
        warnings.warn(
            f"lumos: only {1.0 - smallest:.0%} of the parameters of {gated.model_name} can be "
            f"pruned at all{why}", stacklevel=3)
