"""Budget mode: drive the extracted model's size to a target with a Lagrangian controller.

``lumos.compile(model, example_inputs, budget=0.2)`` asks for an extracted model
that keeps 20% of the parameters (``budget=Budget(flops=0.25)``: 25% of the
FLOPs). ``lumos.penalty(gated)`` then returns the CoFi penalty (Xia et al. 2022)

    ``lambda_1 * (s - t) + lambda_2 * (s - t)**2``

* ``s`` is the expected kept fraction from ``gated.lumos_cost`` (differentiable in
  the gates), less a slowly tracked ``offset`` = running mean of
  ``s - s_det``, where ``s_det`` is the exact fraction the model ``extract`` would
  return now. The offset is applied once the warm-up is over, so the
  controller settles where the *extracted* model meets the target, not just
  its expectation (they differ while gates sit between open and closed).
* ``t`` is the target, ramped linearly from 1.0 to the budget over the warm-up
  (``Budget(params=0.2, steps=N)``: 40% of a planned run of N steps).
* The multipliers climb by gradient *ascent* on the penalty (gradients
  ``s - t`` and ``(s - t)**2``), taken with Adam inside ``penalty`` itself.
  ``lambda_2`` climbs at 30 times the rate of ``lambda_1``, so the quadratic
  (proportional) term dominates and damps the loop; ``lambda_1`` (the integral
  term, which removes the last offset) only moves after the warm-up, so it
  does not wind up while the gates lag the moving target and then overshoot.
  No optimizer needs to know about the multipliers and there is no ``lambda``
  to tune.
* The gates step at ``Budget.gate_lr`` even in an optimizer group shared with
  the weights (:mod:`lumos_fx.gate_step`), so the simplest loop,
  ``torch.optim.Adam(gated.parameters(), lr=1e-3)``, lands too.
* ``extract`` warns (:class:`BudgetWarning`) when the extracted model misses
  the target by more than 2 points, with the cause and the fix.

All controller state (multipliers, their Adam moments, the step counter, the
offset) is buffers of the :class:`BudgetController` at ``gated.lumos_budget``:
``state_dict``/``load_state_dict`` and ``.to()`` carry it, and DDP keeps it in
step across ranks (every rank computes the same update from the same gates).

A controller step is a ``penalty`` call in training mode with gradients enabled; a
``penalty`` computed for logging under ``torch.no_grad()`` or in eval mode changes nothing.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(4, 8),),
    ...                       budget=lumos.Budget(params=0.3, warmup=10))
    >>> lumos.penalty(gated).backward()
    >>> status = lumos.budget_status(gated)
    >>> status.metric, status.target, status.achieved, round(status.current_target, 2)
    ('params', 0.3, 1.0, 0.93)
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import gate_step
from .errors import InputError
from .passes.shrink import shrink
from .report import count_flops, count_params
from .state import state_of, unwrap
from .training import DEFAULT_GATE_LR   # the gates' rate, in an optimizer group shared or not

QUADRATIC_RATE = 30.0   # lambda_2 climbs this many times faster than lambda_1
OFFSET_DECAY = 0.99     # running mean of (expected - extracted) kept fraction
ADAM_BETAS = (0.9, 0.999)
LAG_WARNING = 0.15       # warn when the extracted model lags the target this much at warm-up end
LANDING_TOLERANCE = 0.02  # extract warns when the extracted model misses the target by more
DEFAULT_WARMUP = 500      # controller steps, when the run's length is not given
DEFAULT_WARMUP_FRACTION = 0.4
SETTLE_STEPS = 500        # a run should go on this many steps after the warm-up


class BudgetWarning(UserWarning):
    """The extracted model misses its budget (or the gates lag it at the warm-up's end)."""


@dataclass(frozen=True)
class Budget:
    """A target for the extracted model: the fraction of ``params`` or of ``flops`` kept.

    Args:
        params: fraction of the original parameters to keep, in ``(0, 1]``.
        flops: fraction of the original FLOPs to keep, in ``(0, 1]``.
        steps: the planned length of the run, in training steps (controller
            steps: training-mode ``penalty`` calls). Given, the warm-up scales
            with it (``warmup`` fraction of it, 0.4 by default).
        warmup: the controller steps over which the target falls linearly from
            1.0 to the budget: an int, or a float in ``(0, 1)`` = that fraction
            of ``steps``. Default: ``0.4 * steps``, or 500 without ``steps``.
            Train for at least ``warmup + 500`` steps: the size settles after it.
        lr: Adam step size of the multipliers' ascent (``lambda_2``: 30 times it).
        gate_lr: the rate the gates step at when an optimizer group mixes them
            with the weights (rescaled, see :mod:`lumos_fx.gate_step`); ``None``:
            the group's rate. Groups of gates alone keep their own rate.

    Example::

        >>> Budget(params=0.2).warmup_steps, Budget(params=0.2, steps=3000).warmup_steps
        (500, 1200)
        >>> Budget(flops=0.25, steps=1000, warmup=0.25).warmup_steps
        250
    """

    params: float | None = None
    flops: float | None = None
    warmup: int | float | None = None
    lr: float = 0.01
    steps: int | None = None
    gate_lr: float | None = DEFAULT_GATE_LR

    def __post_init__(self):
        given = [v for v in (self.params, self.flops) if v is not None]
        if len(given) != 1:
            raise InputError("a Budget names exactly one target: Budget(params=0.2) or "
                             "Budget(flops=0.25)")
        if not _is_real(given[0]) or not 0.0 < float(given[0]) <= 1.0:
            raise InputError(f"a budget is the fraction kept, a number in (0, 1]; got {given[0]!r}")
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise InputError(f"Budget(steps=...) is the planned number of training steps, a "
                             f"positive int; got {self.steps!r}")
        w = self.warmup
        if _is_int(w):
            if w < 0:
                raise InputError(f"Budget(warmup=...) must be >= 0 steps; got {w}")
            if self.steps is not None and w > self.steps:
                raise InputError(f"Budget(warmup={w}) is longer than the planned run "
                                 f"(steps={self.steps}): the target would never be reached; "
                                 f"use a shorter warm-up, e.g. warmup=0.4 (40% of the run)")
        elif _is_real(w):
            if not 0.0 < w < 1.0:
                raise InputError(f"a fractional Budget(warmup=...) is a fraction of the run in "
                                 f"(0, 1); got {w}")
            if self.steps is None:
                raise InputError(f"Budget(warmup={w}) is a fraction of the run: also give the "
                                 f"run's length, Budget(..., steps=3000, warmup={w})")
        elif w is not None:
            raise InputError(f"Budget(warmup=...) is an int (steps), a fraction of steps= "
                             f"or None; got {w!r}")
        for name in ("lr", "gate_lr"):
            value = getattr(self, name)
            if name == "gate_lr" and value is None:
                continue
            if not _is_real(value) or not 0.0 < value < math.inf:
                raise InputError(f"Budget({name}=...) must be a positive number; got {value!r}")

    @property
    def metric(self) -> str:
        return "params" if self.params is not None else "flops"

    @property
    def target(self) -> float:
        return float(self.params if self.params is not None else self.flops)

    @property
    def warmup_steps(self) -> int:
        """The warm-up in controller steps, resolved from ``warmup`` and ``steps``."""
        if _is_int(self.warmup):
            return int(self.warmup)
        if self.steps is None:
            return DEFAULT_WARMUP
        fraction = DEFAULT_WARMUP_FRACTION if self.warmup is None else float(self.warmup)
        return max(1, round(fraction * self.steps))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_budget(spec) -> Budget | None:
    """``None`` -> None, a float -> ``Budget(params=float)``, a Budget -> itself."""
    if spec is None or isinstance(spec, Budget):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Budget(params=float(spec))
    raise InputError(f"budget must be a float (fraction of parameters kept) or a "
                     f"lumos_fx.Budget, got {type(spec).__name__}")


class BudgetController(nn.Module):
    """The Lagrangian controller.

    State, all in buffers: ``state`` (float64: ``lambda_1, lambda_2``, their Adam
    first and second moments, the offset) and ``step`` (long). The update is
    scalar arithmetic on the host, reading a few numbers per step (on a GPU
    that is one synchronisation point, like logging ``loss.item()``).

    Args:
        budget: the target and the controller's settings.
    """

    STATE = ("lambda_1", "lambda_2", "m_1", "m_2", "v_1", "v_2", "offset")

    def __init__(self, budget: Budget):
        super().__init__()
        self.budget = budget
        self.register_buffer("state", torch.zeros(len(self.STATE), dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def multipliers(self) -> torch.Tensor:
        """``(lambda_1, lambda_2)``."""
        return self.state[:2]

    @property
    def offset(self) -> torch.Tensor:
        """Running mean of (expected - extracted) kept fraction."""
        return self.state[6]

    def target(self, step: int | None = None) -> float:
        """The ramped target fraction at ``step`` (default: the steps taken so far)."""
        b = self.budget
        step = int(self.step) if step is None else step
        done = min(step / b.warmup_steps, 1.0) if b.warmup_steps else 1.0
        return 1.0 - (1.0 - b.target) * done

    def forward(self, expected: torch.Tensor, observed: tuple[float, float] | None = None):
        """The penalty for the expected kept fraction ``expected`` (a scalar tensor).

        ``observed`` = (expected, extracted) kept fractions as floats, the latter
        exact for the model ``extract`` would return now: given, the controller
        takes one step (offset and multiplier update) before computing the penalty.
        """
        state, step = self.state.tolist(), int(self.step)
        if observed is not None:
            state, step = self._update(state, step, *observed)
            self.state.copy_(torch.tensor(state, dtype=self.state.dtype))
            self.step.fill_(step)
        l1, l2, offset = state[0], state[1], state[6]
        shift = self.target(step) + (offset if step >= self.budget.warmup_steps else 0.0)
        gap = expected - shift
        return gap * (gap * l2 + l1)

    def _update(self, state: list, step: int, s: float, m: float) -> tuple[list, int]:
        """Offset update and one Adam ascent step on the multipliers, in host floats."""
        l1, l2, m1, m2, v1, v2, offset = state
        if step + 1 == self.budget.warmup_steps and m - self.budget.target > LAG_WARNING:
            warnings.warn(
                f"lumos budget: the warm-up is over but the extracted model still keeps "
                f"{m:.0%} of the {self.budget.metric} (target {self.budget.target:.0%}); the "
                f"gates learn too slowly. Give them their own learning rate with "
                f"torch.optim.Adam(lumos.param_groups(gated, lr=...)), a higher "
                f"Budget(gate_lr=...) or a longer Budget(warmup=...).", BudgetWarning,
                stacklevel=7)
        offset = OFFSET_DECAY * offset + (1 - OFFSET_DECAY) * (s - m)
        e = s - self.target(step) - (offset if step >= self.budget.warmup_steps else 0.0)
        step += 1
        b1, b2 = ADAM_BETAS
        grads = (e, e * e)
        m1, m2 = (b1 * m1 + (1 - b1) * grads[0], b1 * m2 + (1 - b1) * grads[1])
        v1, v2 = (b2 * v1 + (1 - b2) * grads[0] ** 2, b2 * v2 + (1 - b2) * grads[1] ** 2)
        c1, c2 = 1 - b1 ** step, 1 - b2 ** step
        lr = self.budget.lr
        if step > self.budget.warmup_steps:        # no integral wind-up while the target moves
            l1 += lr * (m1 / c1) / (math.sqrt(v1 / c2) + 1e-8)
        l2 += lr * QUADRATIC_RATE * (m2 / c1) / (math.sqrt(v2 / c2) + 1e-8)
        return [l1, l2, m1, m2, v1, v2, offset], step

    def extra_repr(self) -> str:
        return f"{self.budget.metric}={self.budget.target}, warmup={self.budget.warmup_steps}"


@torch.compiler.disable
def budget_penalty(module: nn.Module) -> torch.Tensor:
    """The controller's penalty for the gated GraphModule ``module`` (what ``penalty`` returns).

    Runs eagerly inside ``torch.compile``: the controller steps in host floats read
    from the gates (``tolist``), which a compiled graph cannot hold."""
    controller, cost = module.lumos_budget, module.lumos_cost
    which = 0 if controller.budget.metric == "params" else 1
    total = cost.total_params if which == 0 else cost.total_flops
    if not (module.training and torch.is_grad_enabled()):
        return controller(cost.expected(module)[which] / total)
    if controller.budget.gate_lr is not None:
        gate_step.track(module.lumos_gates.parameters(), controller.budget.gate_lr)
    fractions = cost.expected_and_deterministic(module)[which] / total   # (expected, extracted)
    return controller(fractions[0], fractions.detach().tolist())


@dataclass
class BudgetStatus:
    """Where a budgeted model stands: fractions kept, by the metric of its budget.

    ``achieved`` is measured on the extracted model (``count_params`` /
    ``count_flops`` of ``extract(gated)`` over those of the gated model);
    ``expected`` is the controller's differentiable estimate; ``current_target``
    the ramped target of the controller's last step.
    """

    metric: str
    target: float
    achieved: float
    expected: float
    current_target: float
    steps: int
    multipliers: tuple[float, float]

    @property
    def error(self) -> float:
        """``achieved - target`` (fraction; 0.01 is one percentage point)."""
        return self.achieved - self.target

    def __str__(self) -> str:
        return (f"budget {self.metric}: target {self.target:.1%}, achieved {self.achieved:.1%} "
                f"(expected {self.expected:.1%}, ramp at {self.current_target:.1%} "
                f"after {self.steps} steps)")


def budget_status(gated: nn.Module, pruned: nn.Module | None = None) -> BudgetStatus:
    """Measure the model ``extract(gated)`` returns against the budget.

    Without ``pruned`` it extracts (unchecked) and, like ``extract``, warns
    (:class:`BudgetWarning`) when that model misses the target by more than 2 points.

    Args:
        gated: a model compiled with ``budget=`` (or it wrapped in DDP).
        pruned: an already extracted model (``inputs="full"``) to measure
            instead of extracting again.
    """
    state = state_of(gated)
    module = unwrap(gated)
    controller = getattr(module, "lumos_budget", None)
    if controller is None:
        raise InputError("this model was compiled without a budget; "
                         "use lumos.compile(model, example_inputs, budget=0.2)")
    extracted, pruned = pruned is None, shrink(module) if pruned is None else pruned
    metric, cost = controller.budget.metric, module.lumos_cost
    if metric == "params":
        achieved = count_params(pruned) / count_params(module)
    elif getattr(pruned, "lumos_input_mode", "full") != "full":
        raise InputError("budget_status measures FLOPs on the example inputs; pass a model "
                         "extracted with inputs='full' (the default)")
    else:
        inputs = state.example_inputs
        achieved = count_flops(pruned, inputs) / count_flops(module, inputs)
    with torch.no_grad():
        params, flops = cost.expected(module)
        expected = float(params / cost.total_params if metric == "params"
                         else flops / cost.total_flops)
    l1, l2 = controller.multipliers.tolist()
    status = BudgetStatus(metric, controller.budget.target, float(achieved), expected,
                          controller.target(), int(controller.step), (l1, l2))
    if extracted:
        _warn_if_missed(controller, status.achieved, stacklevel=3)
    return status


def warn_if_off_budget(gated: nn.Module, pruned: nn.Module) -> None:
    """Warn (:class:`BudgetWarning`) when ``pruned`` (extracted from ``gated``) misses the
    budget by more than 2 points; nothing for a model compiled without a budget.
    ``extract`` calls it. A FLOP budget of a model extracted with ``inputs="kept"`` is
    judged by the cost model (exact before the keep-one-channel rule)."""
    module = unwrap(gated)
    controller = getattr(module, "lumos_budget", None)
    if controller is None:
        return
    if controller.budget.metric == "params" or getattr(
            pruned, "lumos_input_mode", "full") == "full":
        achieved = budget_status(gated, pruned).achieved
    else:
        with torch.no_grad():
            achieved = float(module.lumos_cost.deterministic(module)[1]
                             / module.lumos_cost.total_flops)
    _warn_if_missed(controller, achieved, stacklevel=4)


def _warn_if_missed(controller: BudgetController, achieved: float, stacklevel: int) -> None:
    b, steps = controller.budget, int(controller.step)
    if abs(achieved - b.target) <= LANDING_TOLERANCE:
        return
    warmup, spec = b.warmup_steps, f"{b.metric}={b.target:g}"
    planned = f" of the {b.steps} planned" if b.steps is not None else ""
    if steps == 0:
        cause = "the budget controller never stepped"
        fix = ("add lumos.penalty(gated) to the loss in training mode, with gradients "
               "enabled, at every step")
    elif steps < warmup + SETTLE_STEPS:
        where = "inside" if steps < warmup else "too soon after"
        cause = (f"training stopped after {steps}{planned} steps, {where} the {warmup}-step "
                 f"warm-up (the size settles a few hundred steps after it)")
        fix = (f"train for at least {warmup + SETTLE_STEPS} steps, or plan the run: "
               f"Budget({spec}, steps={steps}) fits the warm-up into {steps} steps"
               if b.steps is None or steps < b.steps else
               f"plan a longer run, Budget({spec}, steps={max(steps, 1000)}) or more")
    else:
        cause = f"the gates had not settled {steps - warmup} steps after the {warmup}-step warm-up"
        fix = ("train longer, or let the gates move faster (Budget(gate_lr=...) or "
               "lumos.param_groups(gated, gate_lr=...))")
    fill = (" (extract(gated, fill_budget=True) reopens closed channels up to the budget)"
            if achieved < b.target else "")
    warnings.warn(f"lumos budget: the extracted model keeps {achieved:.1%} of the {b.metric}, "
                  f"target {b.target:.1%} ({100 * (achieved - b.target):+.1f} points): {cause}. "
                  f"Fix: {fix}{fill}.", BudgetWarning, stacklevel=stacklevel + 1)
