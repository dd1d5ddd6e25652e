"""What extraction would keep, as numbers and a readable table.

``report(gated)`` extracts (without changing ``gated``) and measures both
models: parameters, FLOPs (``torch.utils.flop_counter.FlopCounterMode`` on the
example inputs), every group's kept/total channels with the layers it spans,
the input features kept and dropped, and the pinned groups with the op that
pinned them.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(3, 4),), feature_names=list("abcd"))
    >>> with torch.no_grad():
    ...     lumos.gates(gated)["input"].log_alpha[1] = -6.0
    >>> r = lumos.report(gated)
    >>> r.params_before, r.params_after, r.kept_features["input"]
    (58, 50, ['a', 'c', 'd'])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .passes.shrink import Decisions, shrink
from .state import state_of, unwrap


def count_flops(module: nn.Module, inputs: tuple) -> int:
    """FLOPs of one forward pass (matmul/conv/attention, as FlopCounterMode counts)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("lumos_"))


@dataclass
class GroupReport:
    name: str
    kind: str
    kept: int
    total: int
    layers: list[str]
    pinned: str | None


@dataclass
class Report:
    model: str
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    groups: list[GroupReport]
    kept_features: dict[str, list[str]]
    dropped_features: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def ratio(a, b):
            return f"{a / b:.1%}" if b else "-"
        lines = [f"lumos_fx report: {self.model}",
                 tabulate([["parameters", f"{self.params_before:,}", f"{self.params_after:,}",
                            ratio(self.params_after, self.params_before)],
                           ["FLOPs", f"{self.flops_before:,}", f"{self.flops_after:,}",
                            ratio(self.flops_after, self.flops_before)]],
                          headers=["", "before", "after", "kept"]), ""]
        rows = [[g.name, g.kind, f"{g.kept}/{g.total}", ", ".join(g.layers[:6])
                 + (" ..." if len(g.layers) > 6 else ""), g.pinned or ""] for g in self.groups]
        lines += [tabulate(rows, headers=["group", "kind", "kept", "layers", "pinned by"]), ""]
        for name, kept in self.kept_features.items():
            lines.append(f"input {name}: kept {len(kept)} of "
                         f"{len(kept) + len(self.dropped_features[name])} features: "
                         + ", ".join(kept))
            if self.dropped_features[name]:
                lines.append(f"  dropped: {', '.join(self.dropped_features[name])}")
        lines += self.notes
        return "\n".join(lines)


def _layers_of_groups(state) -> dict[int, list[str]]:
    owner = state.plan.channels.group_of_atom()
    layers: dict[int, list[str]] = {}
    for spec in state.plan.params.values():
        for labels in spec.dims.values():
            for gid in {owner[a].index for a in labels[labels >= 0].tolist()}:
                if spec.owner and spec.owner not in layers.setdefault(gid, []):
                    layers[gid].append(spec.owner)
    return layers


def report(gated: nn.Module) -> Report:
    """Measure what ``extract(gated)`` returns, against the gated model."""
    state = state_of(gated)
    module = unwrap(gated)
    pruned = shrink(module)
    decisions = Decisions(module, state)
    layers = _layers_of_groups(state)
    groups = []
    for group in state.plan.channels.groups():
        keep = decisions.keep.get(group.index)
        kind = "input" if group.spaces[0].kind == "input" else "channels"
        kept = int(keep.sum()) if keep is not None else group.size
        groups.append(GroupReport(group.name, kind, kept, group.size,
                                  layers.get(group.index, []), group.pinned))
    kept_features, dropped = {}, {}
    for name, indices in pruned.lumos_kept_inputs.items():
        names = state.feature_names.get(name, [])
        kept_features[name] = [names[i] for i in indices]
        dropped[name] = [n for i, n in enumerate(names) if i not in set(indices)]
    inputs = state.example_inputs
    return Report(
        model=state.model_name,
        params_before=count_params(module), params_after=count_params(pruned),
        flops_before=count_flops(module, inputs), flops_after=count_flops(pruned, inputs),
        groups=groups, kept_features=kept_features, dropped_features=dropped)
