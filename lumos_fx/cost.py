"""Expected size of the extracted model as a differentiable function of the gates.

A weight entry survives extraction when every gated channel it touches stays
open, so its expected count is the product, over its labeled dims, of the
expected number of kept positions along that dim (``q_a * q_b`` for an entry
between two gated groups, where ``q = P(z != 0)``). Summed over all sliced
parameters this is the expected parameter count of the extracted model (the
paper's ``L_C``, with each channel's real cost); weights times the output
positions they are applied at give FLOPs.

Example::

    >>> import torch
    >>> from torch import nn
    >>> import lumos_fx as lumos
    >>> gated = lumos.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)),
    ...                       example_inputs=(torch.randn(2, 4),))
    >>> cost = gated.lumos_cost
    >>> int(cost.total_params), round(cost.expected(gated)[0].item(), 1)
    (49, 47.7)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cost_quadratic import QuadraticCost
from .gates import clamp_straight_through
from .passes.build_groups import GroupPlan
from .rules.context import lookup


class ExpectedCost(nn.Module):
    """Expected parameters and FLOPs of the extracted model.

    Every gated channel has a slot in one concatenated probability vector ``q``
    (plus a final slot fixed at 1 for positions no gate can remove). A position
    of a labeled dim survives when all its label arrays survive (a flattened
    column needs its channel and its own position gate), so its probability is
    the product of ``q`` over them; a dim's expected kept size ``S_k`` is the sum
    over its positions; a parameter's expected entries are the product of its
    dims' ``S_k`` times its unlabeled size. The whole computation is a handful
    of batched tensor ops (gather, product, ``index_add``, gather, product, one
    matrix product), whatever the number of layers, and it accepts a leading
    batch dim of ``q`` so ``expected_and_deterministic`` costs one pass.

    Args:
        plan: the channel groups.
        keys: group index -> gate key of the gated groups.
        root: the traced model (to read parameter sizes).
    """

    def __init__(self, plan: GroupPlan, keys: dict[int, str], root: nn.Module):
        super().__init__()
        self._order = [keys[g] for g in sorted(keys)]
        slots = sum(plan.channels.groups()[g].size for g in keys)
        gathers, segments, base, term_dims, weights = [], [], [], [], []
        sliced_params, total_flops = 0, 0.0
        param_paths = {name for name, _ in root.named_parameters()}
        for spec in plan.params.values():
            # a weight computed from parameters becomes a parameter of the extracted model
            # (one computed from buffers alone, a buffer)
            shape = getattr(spec, "shape", None)
            shape = tuple(lookup(root, spec.path).shape) if shape is None else shape
            is_param = spec.path in param_paths or (getattr(spec, "computed", None) is not None
                                                    and not getattr(spec, "constant", False))
            fixed_size = math.prod(s for d, s in enumerate(shape) if d not in spec.dims)
            dims = []
            for d in spec.dims:
                index = np.stack([_global_index(lab, plan, keys) for lab in spec.label_sets(d)])
                gated = (index < slots).any(axis=0)       # positions some gate can remove
                dims.append(len(base))
                base.append(float((~gated).sum()))
                gathers.append(index[:, gated])
                segments.append(np.full(int(gated.sum()), dims[-1]))
            term_dims.append(dims)
            weights.append((float(fixed_size) if is_param else 0.0,
                            float(fixed_size) * spec.flops_per_entry))
            sliced_params += math.prod(shape) if is_param else 0
            total_flops += spec.flops_per_entry * math.prod(shape)
        depth = max((len(g) for g in gathers), default=1)
        width = max((len(d) for d in term_dims), default=1)
        gather = np.concatenate([np.concatenate([g, np.full((depth - len(g), g.shape[1]), slots)])
                                 for g in gathers], axis=1) if gathers else np.zeros((1, 0))
        self._gathers = [f"gather_{j}" for j in range(gather.shape[0])]
        for name, row in zip(self._gathers, gather):
            self.register_buffer(name, torch.from_numpy(row.copy()).long(), persistent=False)
        self.register_buffer("segment", torch.from_numpy(
            np.concatenate(segments) if segments else np.zeros(0)).long(), persistent=False)
        self.register_buffer("base", torch.tensor(base + [1.0]), persistent=False)
        columns = torch.tensor([d + [len(base)] * (width - len(d)) for d in term_dims] or [[0]],
                               dtype=torch.long).reshape(-1, width)
        self._columns = [f"term_dim_{j}" for j in range(width)]
        for name, column in zip(self._columns, columns.T):
            self.register_buffer(name, column.contiguous(), persistent=False)
        self.register_buffer("weights", torch.tensor(weights or [(0.0, 0.0)]).reshape(-1, 2),
                             persistent=False)
        self.total_params = sum(p.numel() for n, p in root.named_parameters()
                                if not n.startswith("lumos_"))
        self.constant_params = self.total_params - sliced_params
        self.total_flops = total_flops
        # one gate per position (the usual case): the cost is a quadratic form, 4 ops a pass
        self.quadratic = (QuadraticCost.build([g[0] for g in gathers], base, term_dims, weights,
                                              self.constant_params, slots)
                          if all(len(g) == 1 for g in gathers) else None)

    def evaluate(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (params, FLOPs) for slot probabilities ``q`` of shape ``(..., slots)``."""
        if self.quadratic is not None:
            return self.quadratic(q)                  # the constant is in its form
        params, flops = _Evaluate.apply(self, q)
        return params + self.constant_params, flops

    def _buffer(self, name: str) -> torch.Tensor:
        return self._buffers[name]

    def slots(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-gate vectors into the slot order of ``evaluate``."""
        parts = [values[key] for key in self._order]
        return torch.cat(parts, dim=-1) if parts else self.weights.new_zeros(0)

    def forward(self, probabilities: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (params, FLOPs) given each gate key's ``P(z != 0)``."""
        return self.evaluate(self.slots(probabilities))

    def expected(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        closed = self._closed_form(gated)
        if closed is None:
            return self.evaluate(self._open_probability(gated, None))
        values, slopes, link, _ = closed
        return (values if link is None else torch.addmv(values, slopes, link)).unbind()

    def deterministic(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The (params, FLOPs) of the model ``extract`` would return now (before
        the rule that keeps one channel in a layer whose gates all closed)."""
        return self({k: (g.deterministic() > 0).float() for k, g in gated.lumos_gates.items()})

    def expected_and_deterministic(self, gated: nn.Module):
        """``params, flops``, each ``[expected, what extract would give now]`` (shape 2);
        the expected entries carry gradients."""
        closed = self._closed_form(gated)
        if closed is None:
            q = self._open_probability(gated, None)
            with torch.no_grad():
                open_now = self.slots({k: (g.deterministic() > 0).to(q.dtype)
                                       for k, g in gated.lumos_gates.items()})
            return self.evaluate(torch.stack([q, open_now]))
        values, slopes, link, q = closed
        c = gated.lumos_gates.shared_config()
        with torch.no_grad():
            # deterministic() > 0  <=>  clamp(log_alpha) > log(-gamma/zeta)  <=>  q > this
            open_now = (q > 1.0 / (1.0 + (-c.gamma / c.zeta) ** (c.beta - 1.0))).to(q.dtype)
            now = torch.stack(self.evaluate(open_now))
        expected = values if link is None else torch.addmv(values, slopes, link)
        return torch.stack([expected, now], 1).unbind()

    def scaled_params(self, gated: nn.Module, scale: float) -> torch.Tensor:
        """``scale`` times the expected parameters (a 0-d tensor): the plain penalty.
        Recorded: one ``dot`` with the gates' gradient link and an add."""
        closed = self._closed_form(gated, metric=0, scale=scale)
        if closed is None:
            return self.expected(gated)[0] * scale
        value, slope, link, _ = closed
        return value if link is None else torch.dot(slope, link).add_(value)

    def _closed_form(self, gated: nn.Module, metric: int | None = None, scale: float = 1.0):
        """For gates that share one GateConfig (else None): ``[params, FLOPs]`` (or the
        one ``metric``) times ``scale`` at the gates' open probabilities ``q`` (Eq. 5),
        their derivatives with respect to the concatenated ``log_alpha`` (computed
        without autograd), the bank's gradient link to attach them to (None without
        gradients; see ``GateBank.link``) and ``q``."""
        bank = gated.lumos_gates
        config = bank.shared_config()
        if config is None or not self._order:
            return None
        log_alphas = [bank[key].log_alpha for key in self._order]
        link = bank.link(log_alphas)
        c = config
        with torch.no_grad():
            q = torch.cat(log_alphas).clamp_(-c.log_alpha_limit, c.log_alpha_limit)
            q = q.sub_(c.beta * math.log(-c.gamma / c.zeta)).sigmoid_()
            if self.quadratic is not None:
                values, grads = self.quadratic.value_and_gradient(q, metric, scale)
            else:
                values, grads = self._value_and_gradient(q)
                values, grads = values * scale, grads * scale
                if metric is not None:
                    values, grads = values[metric], grads[metric]
            grads.mul_(torch.addcmul(q, q, q, value=-1.0))              # dq = q (1 - q)
        return values, grads, link, q

    def _value_and_gradient(self, q: torch.Tensor):
        """``[params, FLOPs]`` at ``q`` and their gradients with respect to ``q`` (2, slots),
        by the product formula, without autograd."""
        ctx = _Stash()
        params, flops = _evaluate(ctx, self, q)
        ones = torch.ones_like(params)
        grads = [_evaluate_grad(ctx, ones, None, ctx.saved_tensors),
                 _evaluate_grad(ctx, None, ones, ctx.saved_tensors)]
        return torch.stack([params + self.constant_params, flops]), torch.stack(grads)

    def _shared_config(self, gated: nn.Module):
        """The one GateConfig of all gates when they are all plain HardConcreteGates
        (then one fused formula serves them all), else None."""
        return gated.lumos_gates.shared_config()

    def _open_probability(self, gated: nn.Module, config) -> torch.Tensor:
        if config is None:
            return self.slots({k: g.open_probability() for k, g in gated.lumos_gates.items()})
        gates = gated.lumos_gates
        log_alpha = torch.cat([gates[key].log_alpha for key in self._order])
        limit = config.log_alpha_limit
        return torch.sigmoid(clamp_straight_through(log_alpha, limit)
                             - config.beta * math.log(-config.gamma / config.zeta))


class _Stash:
    """Stands in for an autograd ``ctx`` where :func:`_evaluate` runs outside autograd."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


class _Evaluate(torch.autograd.Function):
    """``ExpectedCost.evaluate`` as one autograd node: the forward gathers and multiplies
    without recording, the backward is the product rule written out (a dozen tensor
    ops instead of the two dozen autograd nodes of the recorded formula)."""

    @staticmethod
    def forward(ctx, cost: ExpectedCost, q: torch.Tensor):
        ctx.set_materialize_grads(False)
        return _evaluate(ctx, cost, q)

    @staticmethod
    def backward(ctx, grad_params, grad_flops):
        return None, _evaluate_grad(ctx, grad_params, grad_flops, ctx.saved_tensors)


def _evaluate(ctx, cost: ExpectedCost, q: torch.Tensor):
    """Expected (params, FLOPs) for slot probabilities ``q`` (``(..., slots)``), saving on
    ``ctx`` what :func:`_evaluate_grad` needs."""
    gathers = [cost._buffer(name) for name in cost._gathers]
    padded = q if len(gathers) == 1 else F.pad(q, (0, 1), value=1.0)
    parts = [padded.index_select(-1, row) for row in gathers]
    survive = _product(parts)
    base = cost.base if cost.base.dtype == q.dtype else cost.base.to(q.dtype)
    if q.dim() > 1:
        base = base.expand(*q.shape[:-1], -1)
    kept = base.index_add(-1, cost.segment, survive)                   # (..., dims + 1)
    factors = [kept.index_select(-1, cost._buffer(name)) for name in cost._columns]
    weights = cost.weights if cost.weights.dtype == q.dtype else cost.weights.to(q.dtype)
    ctx.cost, ctx.q_shape, ctx.gathers = cost, q.shape, gathers
    ctx.save_for_backward(weights, *parts, *factors)
    ctx.n_parts = len(parts)
    return (_product(factors) @ weights).unbind(-1)                   # params, flops


def _evaluate_grad(ctx, grad_params, grad_flops, saved_tensors):
    """The gradient of :func:`_evaluate` with respect to ``q`` (None when no output has one)."""
    cost = ctx.cost
    weights, *saved = saved_tensors
    parts, factors = saved[:ctx.n_parts], saved[ctx.n_parts:]
    if grad_params is None and grad_flops is None:
        return None
    if grad_flops is None or grad_params is None:      # the usual case: one metric
        column, grad = (0, grad_params) if grad_flops is None else (1, grad_flops)
        grad_entries = grad.unsqueeze(-1) * weights[:, column]       # (..., terms)
    else:
        grad_entries = torch.stack([grad_params, grad_flops], -1) @ weights.T
    grad_kept = weights.new_zeros(*ctx.q_shape[:-1], cost.base.numel())
    for j, name in enumerate(cost._columns):
        grad_kept.index_add_(-1, cost._buffer(name), grad_entries * _product(
            [f for i, f in enumerate(factors) if i != j]))
    grad_survive = grad_kept.index_select(-1, cost.segment)
    slots = ctx.q_shape[-1]
    grad_q = weights.new_zeros(*ctx.q_shape[:-1], slots + (len(parts) > 1))
    for j, row in enumerate(ctx.gathers):
        grad_q.index_add_(-1, row, grad_survive * _product(
            [p for i, p in enumerate(parts) if i != j]))
    return grad_q[..., :slots]


def _product(tensors: list[torch.Tensor]):
    """The elementwise product of ``tensors`` (1 for none)."""
    out = tensors[0] if tensors else 1.0
    for t in tensors[1:]:
        out = out * t
    return out


def _global_index(labels: np.ndarray, plan: GroupPlan, keys: dict[int, str]) -> np.ndarray:
    """Each position's slot in the concatenation of all gates (last slot: no gate, as for
    a channel kept whatever its gate)."""
    group_of, channel_of = plan.channels.atom_table()
    offsets, total = {}, 0
    for gid in sorted(keys):
        offsets[gid] = total
        total += plan.channels.groups()[gid].size
    start = np.full(len(plan.channels.groups()), -1, dtype=np.int64)
    for gid, offset in offsets.items():
        start[gid] = offset
    atoms = labels >= 0
    safe = np.where(atoms, labels, 0)
    slot = np.where(atoms & ~plan.channels.kept_atoms()[safe], start[group_of[safe]], -1)
    return np.where(slot >= 0, slot + channel_of[safe], total)

