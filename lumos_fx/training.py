"""Training a gated model: optimizer parameter groups and a small ``fit`` loop.

For your own loop, a :class:`~lumos_fx.monitor.TrainingMonitor` shows and records
the expected size as training goes; ``fit`` uses one.

Gates want their own learning rate: their ``log_alpha`` starts at 2.5 and must
travel to about -2.4 to close, so at a weight-sized rate (Adam, 1e-3) a gate
needs several thousand steps to close. :func:`param_groups` gives the gates a
higher, constant rate and no weight decay (decay would pull every ``log_alpha``
towards 0, i.e. half open).

What happens with a plain ``torch.optim.Adam(gated.parameters(), lr=1e-3)``:
it runs (the budget controller's multipliers are buffers updated inside
``penalty``, not parameters, so no optimizer needs them, and under DDP no
parameter goes unused). Without a budget the gates move at the weights' rate,
about 1e-3 per step (Adam's step does not depend on the gradient's scale), and
any weight decay of the optimizer applies to them too. With a budget the gates'
update in such a shared group is rescaled to ``Budget.gate_lr`` (0.05, the
default ``gate_lr`` here; see :mod:`lumos_fx.gate_step`): measured on an MLP
53-256-256-5 and a small CNN, plain Adam at lr 1e-3 or 3e-3 lands within 2
points of the budget in 1,000 steps
(``benchmarks/results/budget_accuracy.md``). Budget mode warns at the end of
its warm-up when the model lags the target by more than 15 points, and
``extract`` warns when the extracted model misses it by more than 2.

A learning-rate scheduler scales every group it is given; to keep the gates'
rate constant give it a per-group factor, e.g.
``LambdaLR(opt, [schedule, lambda step: 1.0])`` (the gates' group is last).

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),), budget=0.5)
    >>> groups = lumos.param_groups(gated, lr=1e-3, weight_decay=1e-4)
    >>> [(len(g["params"]), g["lr"], g["weight_decay"]) for g in groups]
    [(4, 0.001, 0.0001), (2, 0.05, 0.0)]
    >>> opt = torch.optim.AdamW(groups)

A complete loop with a progress bar (loss, expected kept fraction, target),
recorded into the model's history for ``lumos.report``::

    >>> batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(4)]
    >>> history = lumos.fit(gated, batches, torch.nn.functional.mse_loss, epochs=2, progress=False)
    >>> len(history["loss"]), int(gated.lumos_budget.step)
    (8, 8)
    >>> [record["step"] for record in lumos.report(gated).history]
    [1, 8]
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .errors import InputError
from .state import state_of, unwrap

DEFAULT_GATE_LR = 0.05


def param_groups(gated: nn.Module, lr: float = 1e-3, gate_lr: float = DEFAULT_GATE_LR,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: the model's weights, then the gates.

    Args:
        gated: a model from ``lumos.compile`` (or it wrapped in DDP).
        lr: learning rate of the model's own parameters.
        gate_lr: learning rate of every gate's ``log_alpha`` (constant; no
            weight decay).
        weight_decay: weight decay of the model's own parameters.

    Returns:
        ``[{"params": weights, "lr": lr, "weight_decay": weight_decay},
        {"params": gates, "lr": gate_lr, "weight_decay": 0.0, "foreach": True,
        "fused": True, "lumos": "gates"}]`` (the weights' group is left out when the
        model has no trainable weights). The gates are many short vectors (one per
        layer), so their step is mostly per-tensor overhead: ``fused`` (Adam, AdamW,
        SGD, Adagrad) updates them all in one kernel, ``foreach`` (the others) in one
        multi-tensor op per update term; an optimizer ignores a key it does not have.
        Measured on the three gates of an MLP 53-256-256-5 (Adam, one CPU thread): 0.23
        ms per parameter, 0.22 ms ``foreach``, 0.09 ms ``fused``. ``fused`` is left out
        when a gate is on a device or dtype without fused kernels.
    """
    state_of(gated)
    module = unwrap(gated)
    gate_params = [p for p in module.lumos_gates.parameters() if p.requires_grad]
    ids = {id(p) for p in gate_params}
    weights = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    groups = []
    if weights:
        groups.append({"params": weights, "lr": lr, "weight_decay": weight_decay})
    gate_group = {"params": gate_params, "lr": gate_lr, "weight_decay": 0.0, "foreach": True,
                  "lumos": "gates"}
    if gate_params and all(_fusable(p) for p in gate_params):
        gate_group["fused"] = True
    groups.append(gate_group)
    return groups


def _fusable(param: torch.Tensor) -> bool:
    """Whether the optimizers' fused kernels take ``param`` (device and dtype)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    return (param.device.type in _get_fused_kernels_supported_devices()
            and param.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64))


def kept_fraction(gated: nn.Module) -> tuple[str, float, float | None]:
    """``(metric, expected kept fraction, current target or None)`` for progress displays."""
    module = unwrap(gated)
    controller = getattr(module, "lumos_budget", None)
    metric = controller.budget.metric if controller is not None else "params"
    cost = module.lumos_cost
    with torch.no_grad():
        params, flops = cost.expected(module)
        kept = float(params / cost.total_params) if metric == "params" else float(
            flops / cost.total_flops)
        target = float(controller.target()) if controller is not None else None
    return metric, kept, target


def _as_args(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def fit(gated: nn.Module, data: Iterable, loss_fn: Callable, *, epochs: int = 1,
        steps: int | None = None, optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3, gate_lr: float = DEFAULT_GATE_LR, weight_decay: float = 0.0,
        progress: bool = True, refresh: int = 10) -> dict[str, list[float]]:
    """Train ``gated`` on ``loss_fn(gated(*inputs), target) + lumos.penalty(gated)``.

    A :class:`~lumos_fx.monitor.TrainingMonitor` shows the loss, the expected kept
    fraction of the parameters and FLOPs and (budget mode) the current target, and
    records them every ``refresh`` steps into the model's history, which
    ``lumos.report(gated)`` includes.

    Args:
        gated: a model from ``lumos.compile`` (or it wrapped in DDP).
        data: re-iterable batches ``(inputs, target)``; ``inputs`` is a tensor or
            a tuple of the model's positional inputs.
        loss_fn: the task loss.
        epochs: passes over ``data`` (ignored when ``steps`` is given).
        steps: total optimizer steps (cycling through ``data``).
        optimizer: defaults to ``Adam(param_groups(gated, lr, gate_lr, weight_decay))``.
        progress: show a tqdm bar.
        refresh: steps between records (and progress updates).

    Returns:
        ``{"loss": [...], "penalty": [...]}``, one entry per step.
    """
    from .api import penalty
    from .monitor import TrainingMonitor

    state_of(gated)
    for name, value, least in (("epochs", epochs, 1), ("refresh", refresh, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError(f"steps must be None or a positive int, got {steps!r}")
    if not callable(loss_fn):
        raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if optimizer is None:
        optimizer = torch.optim.Adam(param_groups(gated, lr, gate_lr, weight_decay))
    total = steps if steps is not None else (
        epochs * _length(data) if _length(data) is not None else None)
    monitor = TrainingMonitor(gated, every=refresh, progress=progress, total=total or None)
    history = {"loss": [], "penalty": []}
    gated.train()
    step, epoch = 0, 0
    with monitor:
        while (steps is None and epoch < epochs) or (steps is not None and step < steps):
            epoch += 1
            seen = False
            for inputs, target in data:
                seen = True
                optimizer.zero_grad(set_to_none=True)
                task = loss_fn(gated(*_as_args(inputs)), target)
                reg = penalty(gated)
                (task + reg).backward()
                optimizer.step()
                history["loss"].append(float(task.detach()))
                history["penalty"].append(float(reg.detach()))
                step += 1
                monitor.step(loss=history["loss"][-1])
                if total is not None and step >= total:
                    break
            if not seen:
                break
    return history


def _length(data) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None
