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

import numpy as np
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
    producers: list[str]
    consumers: list[str]
    followers: list[str]
    pinned: str | None
    inert: int = 0      # kept only so no layer has zero width; gate value 0

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.producers + self.consumers + self.followers))


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
    removed_layers: list[str] = field(default_factory=list)
    #: embedding tables: (name, rows, width before, width after; rows after 0 = dropped)
    embeddings: list[tuple[str, int, int, int, int]] = field(default_factory=list)

    def __str__(self) -> str:
        def ratio(a, b):
            return f"{a / b:.1%}" if b else "-"
        lines = [f"lumos_fx report: {self.model}",
                 tabulate([["parameters", f"{self.params_before:,}", f"{self.params_after:,}",
                            ratio(self.params_after, self.params_before)],
                           ["FLOPs", f"{self.flops_before:,}", f"{self.flops_after:,}",
                            ratio(self.flops_after, self.flops_before)]],
                          headers=["", "before", "after", "kept"]), ""]
        def names(items):
            return ", ".join(items[:4]) + (f" +{len(items) - 4}" if len(items) > 4 else "")
        def kept(g):
            return f"{g.kept}/{g.total}" + (f" ({g.inert} at gate 0)" if g.inert else "")
        rows = [[g.name, g.kind, kept(g), names(g.producers), names(g.consumers),
                 names(g.followers), g.pinned or ""] for g in self.groups]
        lines += [tabulate(rows, headers=["group", "kind", "kept", "produced by", "read by",
                                          "followers", "pinned by"], maxcolwidths=[None] * 6 + [40]),
                  ""]
        for name, kept in self.kept_features.items():
            lines.append(f"input {name}: kept {len(kept)} of "
                         f"{len(kept) + len(self.dropped_features[name])} features: "
                         + ", ".join(kept))
            if self.dropped_features[name]:
                lines.append(f"  dropped: {', '.join(self.dropped_features[name])}")
        if self.removed_layers:
            lines.append(f"removed layers (whole input closed): {', '.join(self.removed_layers)}")
        if self.embeddings:
            lines.append("embedding widths: " + ", ".join(
                f"{name} {before} -> {after}" if rows_after else f"{name} dropped"
                for name, _, before, rows_after, after in self.embeddings))
        return "\n".join(lines)


def _roles(state) -> dict[int, dict[str, list[str]]]:
    """Producers, consumers and followers of every group, by layer name."""
    owner = state.plan.channels.group_of_atom()
    roles: dict[int, dict[str, list[str]]] = {}

    def add(labels, role, name):
        for gid in {owner[a].index for a in labels[labels >= 0].tolist()}:
            names = roles.setdefault(gid, {"producers": [], "consumers": [], "followers": []})[role]
            if name not in names:
                names.append(name)
    for group in state.plan.channels.groups():
        for space in group.spaces:
            if space.kind != "factory":     # tensors the model allocates are not layers
                add(np.arange(space.start, space.start + space.size), "producers", space.name)
    readers = set()
    for use in state.plan.consumers:
        reader = use.fold[0] if use.fold else use.node
        readers.add(reader)
        add(use.labels, "consumers", reader)
    producers = {space.name for space in state.plan.channels.spaces}
    for spec in state.plan.params.values():
        if spec.owner not in producers | readers:
            for labels in spec.dims.values():
                add(labels, "followers", spec.path if not spec.owner else spec.owner)
    return roles


def report(gated: nn.Module) -> Report:
    """Measure what ``extract(gated)`` returns, against the gated model."""
    state = state_of(gated)
    module = unwrap(gated)
    pruned = shrink(module)
    decisions = Decisions(module, state)
    roles = _roles(state)
    groups = []
    for group in state.plan.channels.groups():
        if group.index not in state.keys and all(s.kind == "factory" for s in group.spaces):
            continue    # a tensor the model allocated, joined to no layer: nothing to say
        keep, values = decisions.keep.get(group.index), decisions.value.get(group.index)
        kind = "input" if group.spaces[0].kind in ("input", "categorical") else "channels"
        kept = int(keep.sum()) if keep is not None else group.size
        inert = int((keep & (values == 0)).sum()) if keep is not None else 0
        role = roles.get(group.index, {"producers": [], "consumers": [], "followers": []})
        groups.append(GroupReport(group.name, kind, kept, group.size, role["producers"],
                                  role["consumers"], role["followers"], group.pinned, inert))
    remaining = {name for name, _ in pruned.named_modules()}
    removed = [name for name, mod in module.named_modules()
               if name and not name.startswith("lumos_") and name not in remaining
               and any(True for _ in mod.parameters(recurse=False))]
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
        groups=groups, kept_features=kept_features, dropped_features=dropped,
        removed_layers=removed, embeddings=_embedding_widths(module, pruned))


def _embedding_widths(gated, pruned) -> list[tuple[str, int, int, int, int]]:
    """Every embedding table's rows and width before and after extraction."""
    rows = []
    for node in gated.graph.nodes:
        if node.target is not torch.ops.aten.embedding.default:
            continue
        table = node.args[0]
        if table.op == "call_module":       # a gate on the table (categorical feature)
            table = table.args[0]
        if table.op == "get_attr":
            path = table.target
            before = gated.get_parameter(path).shape
            try:
                after = pruned.get_parameter(path).shape
            except AttributeError:
                after = (0, 0)
            rows.append((path.removesuffix(".weight"), before[0], before[1], after[0], after[1]))
    return list(dict.fromkeys(rows))
