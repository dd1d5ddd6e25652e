"""What ``compile`` leaves on a gated model for ``penalty``, ``extract`` and ``report``.

The state lives in ``gated.lumos_state`` (it survives ``copy.deepcopy`` and
``torch.save``); :func:`state_of` also accepts a model wrapped in
``DistributedDataParallel`` or ``torch.compile``.

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

from torch import nn

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
    #: weight of the pressure on input features (see :mod:`lumos_fx.feature_cost`)
    feature_cost: float = 0.0
    #: what a :class:`~lumos_fx.monitor.TrainingMonitor` recorded, one dict per record
    history: list[dict] = field(default_factory=list)
    #: the last :func:`~lumos_fx.feature_selection.select_features` result, as data
    feature_test: dict | None = None


def unwrap(module: nn.Module) -> nn.Module:
    """The gated module inside DDP/DataParallel and ``torch.compile`` wrappers."""
    while True:
        children = module.__dict__.get("_modules", {})
        inner = children.get("_orig_mod") or children.get("module")
        if not isinstance(inner, nn.Module) or module.__dict__.get("lumos_state") is not None:
            return module
        module = inner


def state_of(module: nn.Module) -> LumosState:
    module = unwrap(module)
    state = module.__dict__.get("lumos_state")
    if state is None:
        raise InputError(
            f"{type(module).__name__} was not made by lumos_fx.compile; "
            "call gated = lumos_fx.compile(model, example_inputs=(x,)) first")
    return state
