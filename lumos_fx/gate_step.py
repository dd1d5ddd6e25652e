"""Gates step at their own rate, even in an optimizer group shared with the weights.

A gate's ``log_alpha`` starts at 2.5 and must reach about -2.4 to close: about 5
units. Adam's step is about ``lr`` per step whatever the gradient's scale, so
with ``torch.optim.Adam(gated.parameters(), lr=1e-3)`` a gate travels at most
about one unit in 1,000 steps, and no penalty or controller can change that
(Adam normalises the gradient's scale away). :func:`lumos_fx.param_groups`
gives the gates their own group and rate; this module makes the simplest loop
behave the same way for a model compiled with a budget.

How: two global optimizer hooks (``torch.optim.optimizer.
register_optimizer_step_pre_hook`` and ``..._post_hook``), installed the first
time a gate is tracked. Around every ``optimizer.step()`` they look for groups
that mix tracked gates with other parameters and rescale each gate's update
``delta`` to ``delta * gate_lr / group["lr"]``: for Adam (and SGD, RMSprop, ...)
exactly the step the gate would take in its own group at ``gate_lr``. The
values and meaning of ``log_alpha`` are untouched; only the size of the step
changes. Left alone: groups holding only gates (whoever built them chose their
rate, e.g. ``param_groups``), groups marked ``"lumos"``, groups whose ``lr`` is
0, parameters no lumos model tracks, and every optimizer step when nothing is
tracked.

Example::

    >>> import torch
    >>> from lumos_fx.gate_step import track
    >>> weight, gate = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    >>> track([gate], gate_lr=0.05)
    >>> opt = torch.optim.SGD([weight, gate], lr=1e-3)
    >>> (weight.sum() + gate.sum()).backward()
    >>> opt.step()
    >>> [round(v, 4) for v in weight.tolist()], [round(v, 4) for v in gate.tolist()]
    ([0.999, 0.999, 0.999], [0.95, 0.95])
"""
from __future__ import annotations

import functools
import math
import weakref
from typing import Iterable

import torch

_RATES: dict[int, tuple] = {}     # id(param) -> (weakref to it, gate_lr); tensors hash by id
_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()     # optimizer -> plan
_PENDING: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # optimizer -> snapshot
_VERSION = [0]
_HOOKS: list = []


def track(params: Iterable[torch.Tensor], gate_lr: float) -> None:
    """Make every optimizer step ``params`` at ``gate_lr`` when they share a group with
    other parameters (see the module docstring). Tracking again updates the rate."""
    changed = False
    for p in params:
        if rate(p) != gate_lr:
            _RATES[id(p)] = (weakref.ref(p, functools.partial(_forget, id(p))), float(gate_lr))
            changed = True
    if changed:
        _VERSION[0] += 1
        _install()


def untrack(params: Iterable[torch.Tensor]) -> None:
    """Let ``params`` step at their group's rate again."""
    for p in params:
        if rate(p) is not None:
            del _RATES[id(p)]
    _VERSION[0] += 1


def rate(param: torch.Tensor) -> float | None:
    """The rate ``param`` steps at in a shared group, or None when it is not tracked."""
    entry = _RATES.get(id(param))
    return entry[1] if entry is not None and entry[0]() is param else None


def _forget(key: int, ref) -> None:
    if key in _RATES and _RATES[key][0] is ref:
        del _RATES[key]
        _VERSION[0] += 1


def _install() -> None:
    if not _HOOKS:
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)
        _HOOKS.append(register_optimizer_step_pre_hook(_before_step))
        _HOOKS.append(register_optimizer_step_post_hook(_after_step))


def _plan(optimizer) -> list:
    """``[(group, [(param, gate_lr), ...]), ...]`` for the groups that mix tracked gates
    with other parameters; cached until the groups or the tracked set change."""
    key = (_VERSION[0], len(optimizer.param_groups),
           tuple(len(g["params"]) for g in optimizer.param_groups))
    cached = _PLANS.get(optimizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = []
    for group in optimizer.param_groups:
        if "lumos" in group:
            continue
        gates = [(p, rate(p)) for p in group["params"] if rate(p) is not None]
        if gates and len(gates) < len(group["params"]):
            plan.append((group, gates))
    _PLANS[optimizer] = (key, plan)
    return plan


def _before_step(optimizer, args, kwargs) -> None:
    if not _RATES:
        return
    plan = _plan(optimizer)
    if plan:
        with torch.no_grad():
            _PENDING[optimizer] = [(group, [(p, r, p.detach().clone()) for p, r in gates])
                                   for group, gates in plan]


def _after_step(optimizer, args, kwargs) -> None:
    pending = _PENDING.pop(optimizer, None) if _PENDING else None
    if not pending:
        return
    with torch.no_grad():
        for group, gates in pending:
            lr = float(group["lr"])
            if not (lr > 0 and math.isfinite(lr)):
                continue
            for p, gate_lr, before in gates:
                factor = gate_lr / lr - 1.0
                if factor:
                    p.add_(p - before, alpha=factor)
