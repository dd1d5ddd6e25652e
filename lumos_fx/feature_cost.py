"""A separate pressure on input features: ``compile(..., feature_cost=c)``.

The L0 penalty and the budget count parameters (or FLOPs). An input feature
costs only the weights that read it, so a feature read by a small first layer
(a 9-channel image into a 3x3 conv, 7 edge features into an edge encoder) is
almost free to keep, and feature selection then depends on the first layer's
size rather than on what the feature is worth to the loss. ``feature_cost``
adds, to whatever ``penalty`` returns (``lam`` or budget mode),

    ``c * E[number of input features kept] / number of gated input features``

so closing every gated feature would lower the loss by ``c``: a feature the
task does not use closes under any ``c > 0``, a useful one stays as long as it
lowers the task loss by more than ``c / n_features``. ``0.0`` (the default)
keeps the paper's penalty.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),), feature_cost=0.1)
    >>> round(float(expected_feature_fraction(gated)), 3)    # every gate starts mostly open
    0.984
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .cost import _global_index
from .errors import InputError
from .state import state_of, unwrap


def check_feature_cost(feature_cost, plan) -> float:
    """``feature_cost`` as a float; InputError when it is not a finite number >= 0 or when
    the model has no gated input features to put it on."""
    if isinstance(feature_cost, bool) or not isinstance(feature_cost, (int, float)):
        raise InputError(f"feature_cost must be a number >= 0, got {feature_cost!r}")
    if not math.isfinite(feature_cost) or feature_cost < 0:
        raise InputError(f"feature_cost must be a finite number >= 0, got {feature_cost!r}")
    if feature_cost and not plan.inputs:
        raise InputError("feature_cost needs gated input features, but no input of this model "
                         "is gated (input_dims left them all ungated)")
    return float(feature_cost)


def feature_slots(plan, keys: dict[int, str]) -> np.ndarray:
    """The gate slot (in ``ExpectedCost`` order) of every gated input feature."""
    slots = [_global_index(np.asarray(labels), plan, keys) for _, labels in plan.inputs.values()]
    return np.concatenate(slots) if slots else np.zeros(0, dtype=np.int64)


def expected_feature_fraction(gated: nn.Module) -> torch.Tensor:
    """Expected fraction of the gated input features that ``extract`` keeps
    (differentiable in the input gates; features no gate can remove count as kept)."""
    state = state_of(gated)
    module = unwrap(gated)
    cost = module.lumos_cost
    index = module.__dict__.get("_lumos_feature_slots")
    if index is None:
        index = torch.from_numpy(feature_slots(state.plan, state.keys)).long()
        module.__dict__["_lumos_feature_slots"] = index
    q = cost._open_probability(module, cost._shared_config(module))
    if len(index) == 0:
        return q.new_ones(())
    q = torch.cat([q, q.new_ones(1)])           # the last slot: no gate, always kept
    return q[index.to(q.device)].mean()


def feature_penalty(gated: nn.Module) -> torch.Tensor | float:
    """``feature_cost * expected_feature_fraction`` (0.0 when no feature cost was asked)."""
    c = getattr(state_of(gated), "feature_cost", 0.0)
    return c * expected_feature_fraction(gated) if c else 0.0
