"""Which input features matter on held-out data: ``lumos.select_features``.

The gates decide on the training loss. A model trained before it was gated (the
paper's S2: fine-tuning a trained model) has often learned to use inputs that only
help it fit its training set, such as noise channels, and the training loss then
defends them against any penalty. Held-out data tells them apart.

:func:`select_features` permutes each still-open input feature across the rows of
every held-out batch (its values keep their distribution but lose their link to
the target) and measures how much the held-out loss rises, with a standard error.
A feature is dropped when both

* its rise is not significant (below ``z`` standard errors): no evidence it helps;
* its rise is small with confidence: ``rise + z * stderr`` is below ``tolerance``
  times the rise from permuting every open feature at once. A model that does not
  use its inputs yet (a collapsed one, awaiting a fine-tune) or too few held-out
  samples to tell give wide or zero bounds, and nothing is dropped.

The features that pass are then permuted together, and the longest prefix (smallest
bound first) that passes the same two tests jointly is closed: their gates are set
shut, so ``extract`` drops them. Nothing else changes; the model with those gates
shut computes what ``extract`` returns, and a fine-tune lets the layers that read the
features adapt to their absence.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    >>> x = torch.randn(512, 3)
    >>> y = x[:, :1] * 2 + x[:, 1:2]                      # feature 2 is noise
    >>> opt = torch.optim.Adam(model.parameters(), 1e-2)
    >>> for _ in range(300):
    ...     opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step()
    >>> gated = lumos.compile(model, example_inputs=(x[:2],), feature_names=["a", "b", "noise"])
    >>> held_out = [(xb, xb[:, :1] * 2 + xb[:, 1:2]) for xb in torch.randn(8, 64, 3)]
    >>> selection = lumos.select_features(gated, held_out, torch.nn.functional.mse_loss)
    >>> selection.dropped
    ['noise']
    >>> lumos.extract(gated.eval()).lumos_kept_inputs
    {'input': [0, 1]}
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from .cost import _global_index
from .errors import InputError
from .naming import gates_by_name, group_names
from .state import state_of, unwrap

__all__ = ["select_features", "FeatureSelection", "FeatureScore", "describe", "rule"]


@dataclass
class FeatureScore:
    """One input feature's held-out test: the mean rise of the held-out loss when it is
    permuted (``harm``), its standard error, and whether it was closed."""

    name: str
    harm: float
    stderr: float
    dropped: bool


@dataclass
class FeatureSelection:
    """The result of :func:`select_features` (features that were already closed are
    not listed). ``joint_harm`` is the loss rise with every dropped feature permuted
    together."""

    scores: list[FeatureScore] = field(default_factory=list)
    held_out_loss: float = float("nan")
    joint_harm: float = 0.0
    joint_stderr: float = 0.0
    #: the loss rise (and its standard error) with every tested feature permuted at once
    total_harm: float = 0.0
    total_stderr: float = 0.0
    z: float = 2.0
    tolerance: float = 0.05
    samples: int = 0

    @property
    def dropped(self) -> list[str]:
        return [s.name for s in self.scores if s.dropped]

    @property
    def kept(self) -> list[str]:
        return [s.name for s in self.scores if not s.dropped]

    def to_dict(self) -> dict:
        return {**asdict(self), "dropped": self.dropped, "kept": self.kept}

    def __str__(self) -> str:
        return describe(self.to_dict())


def describe(test: dict) -> str:
    """A :meth:`FeatureSelection.to_dict` as a text table, most useful feature first."""
    scores = sorted(test["scores"], key=lambda s: -s["harm"])
    width = max([len(s["name"]) for s in scores] + [7])
    lines = [f"held-out loss {test['held_out_loss']:.6g} over {test['samples']} samples, "
             f"{test['total_harm']:.4g} higher with every feature permuted; {rule(test)}",
             f"{'feature':<{width}}  {'loss rise':>11}  {'std err':>10}  decision"]
    for s in scores:
        lines.append(f"{s['name']:<{width}}  {s['harm']:>11.4g}  {s['stderr']:>10.3g}  "
                     f"{'dropped' if s['dropped'] else 'kept'}")
    return "\n".join(lines)


def rule(test: dict) -> str:
    """The drop rule of a :meth:`FeatureSelection.to_dict`, in words."""
    return (f"a feature is dropped when permuting it raises the loss by less than {test['z']:g} "
            f"standard errors and, with that confidence, by less than {test['tolerance']:g} of "
            "that")


def _check(z, tolerance, repeats, loss_fn) -> None:
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not (math.isfinite(z) and z > 0):
        raise InputError(f"z must be a positive number of standard errors, got {z!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            0 < tolerance < 1):
        raise InputError(f"tolerance must be a fraction in (0, 1) of the loss rise with every "
                         f"feature permuted, got {tolerance!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats must be a positive int, got {repeats!r}")
    if not callable(loss_fn):
        raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")


def _batches(held_out: Iterable) -> list[tuple[tuple, object]]:
    try:
        batches = list(held_out)
    except TypeError:
        raise InputError("held_out must be an iterable of (inputs, target) batches, got "
                         f"{type(held_out).__name__}") from None
    out = []
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InputError("every held-out batch must be a pair (inputs, target), where "
                             "inputs is a tensor or a tuple of the model's positional inputs")
        inputs, target = batch
        out.append((tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,), target))
    if not out:
        raise InputError("held_out has no batches; pass held-out (inputs, target) pairs the "
                         "model was not trained on")
    return out


def _features(gated: nn.Module):
    """``{slot: [(placeholder, dim, position), ...]}`` of every open gated input feature,
    their names, and ``slot -> (gate, channel)``."""
    state = state_of(gated)
    plan, keys = state.plan, state.keys
    names = group_names(state)
    gates = gates_by_name(gated)
    owner, is_open, start = {}, {}, 0
    for gid in sorted(keys):
        gate = gates[names[gid]]
        with torch.no_grad():
            values = gate.deterministic().tolist()
        for channel in range(gate.size):
            owner[start + channel] = (gate, channel)
            is_open[start + channel] = values[channel] > 0.0
        start += gate.size
    if not plan.inputs:
        raise InputError("no input of this model is gated (input_dims left them all ungated), "
                         "so there are no input features to select")
    positions, labels_of = {}, {}
    for name, (dim, labels) in plan.inputs.items():
        feature_names = state.feature_names.get(name, [])
        for position, slot in enumerate(_global_index(np.asarray(labels), plan, keys)):
            slot = int(slot)
            if not is_open.get(slot, False):
                continue                      # an ungated position, or closed by training
            positions.setdefault(slot, []).append((name, dim, position))
            labels_of.setdefault(slot, feature_names[position] if position < len(
                feature_names) else f"{name}[{position}]")
    return positions, labels_of, owner


def _placeholders(root: nn.Module) -> list[str]:
    return [n.target for n in root.graph.nodes if n.op == "placeholder"]


class _HeldOut:
    """Per-sample held-out losses of the gated model, with some features permuted."""

    def __init__(self, gated, root, batches, loss_fn, seed: int):
        self.gated, self.loss_fn, self.seed = gated, loss_fn, seed
        self.order = {name: i for i, name in enumerate(_placeholders(root))}
        self.batches = []
        signature = root.__dict__.get("call_signature")
        for inputs, target in batches:
            args, kwargs = signature.bind(inputs, {}) if signature is not None else (inputs, {})
            leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
            if len(leaves) != len(self.order):
                raise InputError(f"a held-out batch has {len(leaves)} input tensors but the "
                                 f"compiled model takes {len(self.order)}; pass inputs the way "
                                 "the model is called")
            self.batches.append((leaves, spec, target))

    def losses(self, features: list[list[tuple[str, int, int]]], repeat: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 7919 * repeat)
        out = []
        for leaves, spec, target in self.batches:
            leaves = list(leaves)
            for positions in features:
                rows = None
                for name, dim, position in positions:
                    i = self.order[name]
                    if rows is None:
                        rows = leaves[i].select(dim, position).shape[0] if leaves[i].dim() > 1 else 0
                        perm = torch.randperm(max(rows, 1), generator=generator)
                    leaves[i] = _permuted(leaves[i], dim, position, perm)
            args, kwargs = pytree.tree_unflatten(leaves, spec)
            loss = self.loss_fn(self.gated(*args, **kwargs), target)
            loss = loss.detach().float().reshape(loss.shape[0], -1).mean(1) if loss.dim() else \
                loss.detach().float().reshape(1)
            out.append(loss.cpu())
        losses = torch.cat(out).double()
        if not torch.isfinite(losses).all():
            raise InputError("loss_fn gave a NaN or infinite loss on the held-out batches; "
                             "check the held-out data and the model before selecting features")
        return losses


def _permuted(tensor: torch.Tensor, dim: int, position: int, perm: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its ``position`` along ``dim`` shuffled across its first other dim."""
    column = tensor.select(dim, position)
    if column.dim() == 0 or column.shape[0] != len(perm) or len(perm) < 2:
        return tensor
    out = tensor.clone()
    out.select(dim, position).copy_(column[perm.to(column.device)])
    return out


def _rise(held: _HeldOut, base: torch.Tensor, features, repeats: int) -> tuple[float, float]:
    diff = sum(held.losses(features, r) - base for r in range(repeats)) / repeats
    n = len(diff)
    stderr = float(diff.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return float(diff.mean()), stderr


def select_features(gated: nn.Module, held_out: Iterable, loss_fn: Callable, *, z: float = 2.0,
                    tolerance: float = 0.05, repeats: int = 2,
                    seed: int = 0) -> FeatureSelection:
    """Close the input features that do not help the model on held-out data.

    Args:
        gated: a model from ``lumos.compile`` (or it wrapped in DDP), trained.
        held_out: ``(inputs, target)`` batches the model was not trained on; ``inputs``
            is a tensor or a tuple of the model's positional inputs. Features are
            permuted across the rows of each batch, so batches need at least two rows.
        loss_fn: ``loss_fn(output, target)``; a per-sample loss (``reduction="none"``)
            gives a sharper test than a batch mean, which counts as one sample.
        z: confidence, in standard errors, of both tests (see the module docstring).
        tolerance: the largest share of the loss rise from permuting every feature that
            the dropped features may carry, together, at the upper confidence bound.
        repeats: permutations averaged per feature.
        seed: seed of the permutations.

    Returns:
        A :class:`FeatureSelection`; the dropped features' gates are shut in place.
    """
    _check(z, tolerance, repeats, loss_fn)
    root = unwrap(gated)
    positions, names, owner = _features(gated)
    batches = _batches(held_out)
    was_training = gated.training
    gated.eval()
    try:
        with torch.no_grad():
            held = _HeldOut(gated, root, batches, loss_fn, seed)
            base = held.losses([])
            result = FeatureSelection(held_out_loss=float(base.mean()), z=float(z),
                                      tolerance=float(tolerance), samples=len(base))
            total = _rise(held, base, list(positions.values()), repeats) if positions else (0., 0.)
            result.total_harm, result.total_stderr = total
            margin = tolerance * total[0]

            def negligible(harm: float, err: float) -> bool:
                return (harm < z * err or harm <= 0) and harm + z * err < margin

            tested = {slot: _rise(held, base, [feats], repeats) for slot, feats in positions.items()}
            weak = sorted((s for s, rise in tested.items() if negligible(*rise)),
                          key=lambda s: tested[s][0] + z * tested[s][1])
            low, high, joint = 0, len(weak), (0.0, 0.0)
            while low < high:              # the longest prefix that is negligible jointly
                mid = (low + high + 1) // 2
                rise = _rise(held, base, [positions[s] for s in weak[:mid]], repeats)
                if negligible(*rise):
                    low, joint = mid, rise
                else:
                    high = mid - 1
            dropped = set(weak[:low])
            for slot in dropped:
                gate, channel = owner[slot]
                gate.log_alpha[channel] = -gate.config.log_alpha_limit
    finally:
        gated.train(was_training)
    result.joint_harm, result.joint_stderr = joint
    result.scores = [FeatureScore(names[s], tested[s][0], tested[s][1], s in dropped)
                     for s in positions]
    state_of(gated).feature_test = result.to_dict()      # for lumos.report
    return result
