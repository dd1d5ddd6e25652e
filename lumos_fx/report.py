"""What extraction would keep, as numbers and a readable table.

``report(gated)`` extracts (without changing ``gated``) and measures both
models: parameters, FLOPs (``torch.utils.flop_counter.FlopCounterMode`` on the
example inputs), every group's kept/total channels with the layers it spans,
the input features kept and dropped, and the pinned groups with the op that
pinned them; plus the training history a ``TrainingMonitor`` recorded and
latencies you measured. Groups are named as ``lumos.gates`` names them
(:mod:`lumos_fx.naming`). ``Report.to_dict()`` / ``to_json()`` give it as data,
``to_html()`` as a self-contained page.

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

As data (``r.to_json(path)`` writes the same as JSON, ``r.to_html(path)`` a page)::

    >>> d = r.to_dict()
    >>> d["params"], [(g["name"], g["kept"], g["total"]) for g in d["groups"]]
    ({'before': 58, 'after': 50}, [('input', 3, 4), ('0', 8, 8), ('2', 2, 2)])
    >>> d["inputs"]["input"]["dropped"], d["groups"][2]["pinned"]
    (['b'], 'model output')
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import InputError
from .flop_formulas import EXTRA_FLOP_FORMULAS
from .monitor import check_history
from .naming import group_names
from .passes.shrink import Decisions, shrink
from .state import state_of, unwrap


def count_flops(module: nn.Module, inputs: tuple) -> int:
    """FLOPs of one forward pass (matmul/conv/attention, as FlopCounterMode counts, and
    recurrent layers: :mod:`lumos_fx.flop_formulas`)."""
    was_training = module.training
    module.eval()
    try:
        # with gradients on: under no_grad a view of a parameter passed to a submodule
        # (``w.view(o, -1)`` into a gate) requires grad without a grad_fn, and the module
        # tracker of FlopCounterMode fails on it
        with torch.enable_grad(), FlopCounterMode(display=False,
                                                  custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("lumos_"))


@dataclass
class GroupReport:
    """One channel group: ``name`` as ``lumos.gates`` names it, ``key`` its gate's
    ``state_dict`` key (None when the group has no gate); ``kind`` is ``"input"``
    (model input features), ``"channels"`` or ``"positions"`` (single positions of
    a flattened layer's inputs)."""

    name: str
    kind: str
    kept: int
    total: int
    producers: list[str]
    consumers: list[str]
    followers: list[str]
    pinned: str | None
    inert: int = 0      # kept only so no layer has zero width; gate value 0
    key: str | None = None

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.producers + self.consumers + self.followers))

    def to_dict(self) -> dict:
        return {"name": self.name, "key": self.key, "kind": self.kind, "kept": self.kept,
                "total": self.total, "inert": self.inert, "pinned": self.pinned,
                "layers": self.layers, "producers": list(self.producers),
                "consumers": list(self.consumers), "followers": list(self.followers)}


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
    #: what a TrainingMonitor recorded (see lumos_fx.monitor.FIELDS), oldest first
    history: list[dict] = field(default_factory=list)
    #: measured latency: label (e.g. "batch 1") -> (seconds before, seconds after)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the layers of the groups in the order the model runs them
    layer_order: list[str] = field(default_factory=list)
    #: the held-out test of ``lumos.select_features`` (``FeatureSelection.to_dict()``)
    feature_test: dict | None = None

    def to_dict(self) -> dict:
        """Everything in the report as plain JSON-serialisable data."""
        data = {
            "format": "lumos_fx.report/1", "model": self.model,
            "params": {"before": self.params_before, "after": self.params_after},
            "flops": {"before": self.flops_before, "after": self.flops_after},
            "groups": [g.to_dict() for g in self.groups],
            "inputs": {name: {"kept": list(kept), "dropped": list(self.dropped_features[name])}
                       for name, kept in self.kept_features.items()},
            "removed_layers": list(self.removed_layers),
            "layer_order": list(self.layer_order),
            "embeddings": [{"name": n, "rows_before": r, "width_before": wb, "rows_after": ra,
                            "width_after": wa} for n, r, wb, ra, wa in self.embeddings],
        }
        if self.latency:
            data["latency"] = {label: {"before": b, "after": a}
                               for label, (b, a) in self.latency.items()}
        if self.feature_test:
            data["feature_test"] = self.feature_test
        if self.history:
            data["history"] = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
                                for k, v in record.items()} for record in self.history]
        return data

    def to_json(self, path=None, indent: int | None = 2) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_html(self, path=None) -> str:
        """A self-contained HTML page of the report (see :mod:`lumos_fx.report_html`);
        also written to ``path`` when given."""
        from .report_html import render_html
        page = render_html(self.to_dict())
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

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
        if self.feature_test:
            from .feature_selection import describe
            lines.append(describe(self.feature_test))
        if self.removed_layers:
            lines.append(f"removed layers (whole input closed): {', '.join(self.removed_layers)}")
        if self.embeddings:
            lines.append("embedding widths: " + ", ".join(
                f"{name} {before} -> {after}" if rows_after else f"{name} dropped"
                for name, _, before, rows_after, after in self.embeddings))
        for label, (before, after) in self.latency.items():
            lines.append(f"latency {label}: {before * 1e6:,.1f} us -> {after * 1e6:,.1f} us")
        if self.history:
            last = self.history[-1]
            lines.append(f"training history: {len(self.history)} records to step {last['step']}, "
                         f"expected kept params {last['kept_params']:.1%}")
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


def _check_latency(latency) -> dict[str, tuple[float, float]]:
    if latency is None:
        return {}
    if not isinstance(latency, dict):
        raise InputError("latency must be a dict label -> (seconds before, seconds after), "
                         f"got {type(latency).__name__}")
    checked = {}
    for label, pair in latency.items():
        ok = (isinstance(pair, (tuple, list)) and len(pair) == 2
              and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                      and v > 0 for v in pair))
        if not isinstance(label, str) or not ok:
            raise InputError(f"latency[{label!r}] must be (seconds before, seconds after), two "
                             f"positive numbers keyed by a str label, got {pair!r}")
        checked[label] = (float(pair[0]), float(pair[1]))
    return checked


def report(gated: nn.Module, *, history=None, latency: dict | None = None) -> Report:
    """Measure what ``extract(gated)`` returns, against the gated model.

    Args:
        gated: a model from ``lumos.compile``.
        history: training records to include (a ``lumos.TrainingMonitor`` or its
            ``history`` list); by default what monitors recorded on ``gated``.
        latency: measured latencies to show, ``{"batch 1": (seconds before,
            seconds after), ...}``.
    """
    state = state_of(gated)
    records = check_history(history) if history is not None else check_history(
        list(getattr(state, "history", None) or []))
    latency = _check_latency(latency)
    module = unwrap(gated)
    pruned = shrink(module)
    decisions = Decisions(module, state)
    roles = _roles(state)
    names = group_names(state)
    groups = []
    for group in state.plan.channels.groups():
        if group.index not in state.keys and all(s.kind == "factory" for s in group.spaces):
            continue    # a tensor the model allocated, joined to no layer: nothing to say
        keep, values = decisions.keep.get(group.index), decisions.value.get(group.index)
        first = group.spaces[0].kind
        kind = ("input" if first in ("input", "categorical")
                else "positions" if first == "positions" else "channels")
        kept = int(keep.sum()) if keep is not None else group.size
        inert = int((keep & (values == 0)).sum()) if keep is not None else 0
        role = roles.get(group.index, {"producers": [], "consumers": [], "followers": []})
        groups.append(GroupReport(names[group.index], kind, kept, group.size, role["producers"],
                                  role["consumers"], role["followers"], group.pinned, inert,
                                  state.keys.get(group.index)))
    removed = _removed_layers(module, pruned)
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
        removed_layers=removed, embeddings=_embedding_widths(module, pruned),
        history=records, latency=latency, layer_order=_layer_order(module, groups),
        feature_test=state.feature_test)


def _removed_layers(gated: nn.Module, pruned: nn.Module) -> list[str]:
    """Layers with parameters the pruned model no longer has under any of their names:
    a module or parameter shared under two names (T5's ``shared`` embedding is also
    ``encoder.embed_tokens``) lives on under the one the captured graph uses."""
    remaining = {name for name, _ in pruned.named_modules()}
    owners: dict[int, set[str]] = {}
    for path, param in gated.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), set()).add(path.rpartition(".")[0])
    return [name for name, mod in gated.named_modules()
            if name and not name.startswith("lumos_") and name not in remaining
            and any(True for _ in mod.parameters(recurse=False))
            and not any(owners[id(p)] & remaining for p in mod.parameters(recurse=False))]


def _layer_order(gated: nn.Module, groups: list[GroupReport]) -> list[str]:
    """Every layer the groups name, in the order the eval graph first runs it: a node's
    position, a module's first op reading one of its parameters, an input's placeholder."""
    position: dict[str, int] = {}
    nodes = list(gated.graph.nodes)
    index_of = {node: i for i, node in enumerate(nodes)}
    for index, node in enumerate(nodes):
        position.setdefault(node.name, index)
        if node.op == "placeholder":
            position.setdefault(str(node.target), index)
        if node.op == "get_attr" and node.users:
            first = min(index_of[user] for user in node.users)
            parts = str(node.target).split(".")
            for end in range(1, len(parts)):
                owner = ".".join(parts[:end])
                position[owner] = min(position.get(owner, first), first)
    names = dict.fromkeys(name for g in groups for name in g.producers + g.consumers)
    unknown = len(nodes)
    return sorted(names, key=lambda name: position.get(name.split(":")[0], unknown))


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
