"""What ``compile`` leaves on a gated model for ``penalty``, ``extract`` and ``report``.

The state lives in ``gated.meta["lumos"]`` (``GraphModule.meta`` survives
``copy.deepcopy``); :func:`state_of` also accepts a model wrapped in
``DistributedDataParallel``.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> from lumos_fx.state import state_of
    >>> gated = lumos.compile(torch.nn.Linear(3, 2), example_inputs=(torch.randn(1, 3),))
    >>> sorted(state_of(gated).feature_names)
    ['input']
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from .errors import InputError
from .gates import GateConfig
from .passes.build_groups import GroupPlan


@dataclass
class LumosState:
    plan: GroupPlan
    keys: dict[int, str]
    config: GateConfig
    lam: float
    example_inputs: tuple
    feature_names: dict[str, list[str]] = field(default_factory=dict)
    model_name: str = "model"


def unwrap(module: nn.Module) -> nn.Module:
    """The gated GraphModule inside DDP/DataParallel wrappers."""
    while hasattr(module, "module") and isinstance(module.module, nn.Module):
        module = module.module
    return module


def state_of(module: nn.Module) -> LumosState:
    module = unwrap(module)
    state = getattr(module, "meta", {}).get("lumos") if isinstance(module, fx.GraphModule) else None
    if state is None:
        raise InputError(
            f"{type(module).__name__} was not made by lumos_fx.compile; "
            "call gated = lumos_fx.compile(model, example_inputs=(x,)) first")
    return state
