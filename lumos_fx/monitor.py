"""Watch a gated model train: kept fraction, expected size, budget, loss.

A :class:`TrainingMonitor` is called once per optimizer step from any training
loop. Every ``every`` steps it records the expected fraction of the parameters
and FLOPs that ``extract`` would keep (the differentiable cost model,
:func:`lumos.expected_cost`), the budget controller's current target (budget
mode) and the task loss, and shows them on a tqdm progress bar. The records
are kept on the gated model itself, so ``lumos.report(gated)`` includes them
(``Report.history``, ``to_dict()["history"]`` and the plot of the HTML report)
and they travel with ``torch.save(gated)``. ``callbacks`` in
:mod:`lumos_fx.callbacks` drive it from the Hugging Face ``Trainer`` and
PyTorch Lightning.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),), budget=0.5)
    >>> opt = torch.optim.Adam(lumos.param_groups(gated))
    >>> monitor = lumos.TrainingMonitor(gated, every=5, progress=False)
    >>> for step in range(10):
    ...     x = torch.randn(16, 4)
    ...     task = (gated(x) - x[:, :1]).pow(2).mean()
    ...     opt.zero_grad()
    ...     (task + lumos.penalty(gated)).backward()
    ...     opt.step()
    ...     _ = monitor.step(loss=task)
    >>> [r["step"] for r in monitor.history]
    [1, 5, 10]
    >>> sorted(monitor.history[-1])
    ['flops', 'kept_flops', 'kept_params', 'loss', 'metric', 'params', 'step', 'target']
    >>> len(lumos.report(gated).history)
    3
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from .errors import InputError
from .state import state_of, unwrap

#: the fields of one history record, in display order
FIELDS = ("step", "loss", "kept_params", "kept_flops", "params", "flops", "target", "metric")


def _as_float(loss) -> float | None:
    if loss is None:
        return None
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise InputError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        return float(loss.detach())
    if isinstance(loss, Real):
        return float(loss)
    raise InputError(f"loss must be a number or a scalar tensor, got {type(loss).__name__}")


def snapshot(gated: nn.Module, step: int, loss=None) -> dict:
    """One history record of ``gated`` now (see :data:`FIELDS`)."""
    module = unwrap(gated)
    state_of(module)
    cost = module.lumos_cost
    controller = getattr(module, "lumos_budget", None)
    with torch.no_grad():
        params, flops = cost.expected(module)
        target = float(controller.target()) if controller is not None else None
    params, flops = float(params), float(flops)
    return {
        "step": int(step), "loss": _as_float(loss),
        "kept_params": params / cost.total_params if cost.total_params else 1.0,
        "kept_flops": flops / cost.total_flops if cost.total_flops else 1.0,
        "params": params, "flops": flops, "target": target,
        "metric": controller.budget.metric if controller is not None else "params",
    }


def check_history(history) -> list[dict]:
    """``history`` as a list of records (from a monitor, a list of dicts, or None)."""
    if history is None:
        return []
    if isinstance(history, TrainingMonitor):
        return list(history.history)
    if not isinstance(history, (list, tuple)):
        raise InputError("history must be a lumos.TrainingMonitor or a list of dicts with "
                         f"'step' and 'kept_params', got {type(history).__name__}")
    for i, record in enumerate(history):
        if not isinstance(record, dict) or "step" not in record or "kept_params" not in record:
            raise InputError(f"history[{i}] must be a dict with 'step' and 'kept_params' "
                             f"(what TrainingMonitor records), got {record!r:.80}")
    return [dict(record) for record in history]


class TrainingMonitor:
    """Records and shows the expected size of the pruned model while ``gated`` trains.

    Args:
        gated: a model from ``lumos.compile`` (or it wrapped in DDP/``torch.compile``).
        every: record (and refresh the bar) every this many steps; the first step is
            always recorded.
        progress: show a tqdm bar (loss, kept params and FLOPs, budget target).
        total: expected number of steps, for the bar's length and ETA.
        desc: the bar's label.

    Records go to ``gated``'s own history (``monitor.history``), continuing the step
    count of an earlier monitor on the same model.
    """

    def __init__(self, gated: nn.Module, *, every: int = 10, progress: bool = True,
                 total: int | None = None, desc: str = "lumos"):
        state = state_of(gated)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InputError(f"every must be a positive int, got {every!r}")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)
                                  or total < 1):
            raise InputError(f"total must be None or a positive int, got {total!r}")
        if not isinstance(progress, bool):
            raise InputError(f"progress must be True or False, got {progress!r}")
        if getattr(state, "history", None) is None:     # a model saved before histories
            state.history = []
        self.gated, self.every, self.total, self.desc = gated, every, total, desc
        self._state = state
        self._start = state.history[-1]["step"] if state.history else 0
        self.steps = 0
        self._bar = self._make_bar() if progress else None

    @property
    def history(self) -> list[dict]:
        """Every record of the model so far, oldest first."""
        return self._state.history

    def _make_bar(self):
        from tqdm.auto import tqdm
        return tqdm(total=self.total, desc=self.desc, unit="step", dynamic_ncols=True)

    def set_total(self, total: int) -> None:
        """Set the expected number of steps (when the loop learns it late)."""
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise InputError(f"total must be a positive int, got {total!r}")
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def step(self, loss=None) -> dict | None:
        """Count one optimizer step; return the new record on recording steps, else None.

        ``loss`` (the task loss, a number or scalar tensor) is read only on
        recording steps, so passing it every step costs no device sync.
        """
        self.steps += 1
        last = self.total is not None and self.steps == self.total
        if self.steps != 1 and self.steps % self.every and not last:
            if self._bar is not None:
                self._bar.update(1)
            return None
        record = snapshot(self.gated, self._start + self.steps, loss)
        self.history.append(record)
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(record), refresh=False)
            self._bar.update(1)
        return record

    def attach_loss(self, loss) -> None:
        """Set the loss of the latest record (for loops that learn it after the step)."""
        if self.history and self.history[-1]["step"] == self._start + self.steps:
            self.history[-1]["loss"] = _as_float(loss)

    @staticmethod
    def _postfix(record: dict) -> dict[str, str]:
        postfix = {}
        if record["loss"] is not None and math.isfinite(record["loss"]):
            postfix["loss"] = f"{record['loss']:.4g}"
        postfix["params"] = f"{record['kept_params']:.1%}"
        postfix["flops"] = f"{record['kept_flops']:.1%}"
        if record["target"] is not None:
            postfix["target"] = f"{record['target']:.1%}"
        return postfix

    def close(self) -> None:
        """Close the progress bar (recording can go on)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "TrainingMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def hf_callback(self):
        """A ``transformers.TrainerCallback`` driving this monitor
        (see :mod:`lumos_fx.callbacks`)."""
        from .callbacks import hf_callback
        return hf_callback(self)

    def lightning_callback(self):
        """A Lightning ``Callback`` driving this monitor (see :mod:`lumos_fx.callbacks`)."""
        from .callbacks import lightning_callback
        return lightning_callback(self)
