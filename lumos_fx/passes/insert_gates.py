"""Insert one gate per group and a gate multiplication at every consumer input.

Gates sit at consumer inputs (paper: "gates at layer inputs"), so a
deterministic gate value folds exactly into the consumer's weight columns on
extraction. A ``Linear``/``Conv*d`` consumer called once applies the gate to
those weight columns already while training (:mod:`lumos_fx.weight_gates`). Each gated group gets one :class:`~lumos_fx.gates.HardConcreteGate`
in ``gm.lumos_gates`` (a :class:`~lumos_fx.gate_bank.GateBank`, called once per
forward: every consumer of a group sees the same sample); each consumer input
gets a :class:`~lumos_fx.gate_apply.GateApply` in ``gm.lumos_apply``.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lumos_fx.passes.shape_prop import propagate_shapes
    >>> from lumos_fx.passes.build_groups import build_groups
    >>> from lumos_fx.passes.insert_gates import insert_gates
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    >>> propagate_shapes(gm, (torch.randn(4, 3),))
    >>> keys = insert_gates(gm, build_groups(gm))
    >>> sorted(keys.values()), [n.target for n in gm.graph.nodes if n.op == "call_module"]
    (['input', 'm0'], ['lumos_gates', '0', '1', '2'])
    >>> type(gm.get_submodule("2")).__name__        # the gates multiply its weight columns
    'WeightGatedLinear'
"""
from __future__ import annotations

import operator
import re
from collections import Counter

import numpy as np
import torch
from torch import fx, nn

from ..gate_apply import GateApply
from ..gate_bank import GateBank
from ..weight_gates import can_gate_weight, weight_gated
from ..gates import GateConfig, HardConcreteGate
from .build_groups import GroupPlan


def gate_key(name: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", name)
    key = key if key and not key[0].isdigit() else f"m{key}"
    base, n = key, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


def _gated_groups(plan: GroupPlan) -> list[int]:
    owner = plan.channels.group_of_atom()
    read = set()
    for use in plan.consumers:
        read.update(owner[a].index for a in np.unique(use.labels[use.labels >= 0]).tolist())
    return [g.index for g in plan.channels.groups() if g.index in read and g.pinned is None]


def consumer_index(labels: np.ndarray, plan: GroupPlan, keys: dict[int, str]):
    """Which gated groups a label array reads, and its positions' gather index."""
    group_of, channel_of = plan.channels.atom_table()
    atoms = labels >= 0
    groups = np.where(atoms, group_of[np.where(atoms, labels, 0)], -1)
    present = sorted(set(np.unique(groups[atoms]).tolist()) & keys.keys())
    offset = np.full(len(plan.channels.groups()) + 1, -1, dtype=np.int64)
    total = 0
    for gid in present:
        offset[gid] = total
        total += plan.channels.groups()[gid].size
    start = offset[groups]  # groups == -1 reads the sentinel slot (-1)
    index = np.where(start >= 0, start + channel_of[np.where(atoms, labels, 0)], total)
    return present, index


def _weight_gated_uses(gm: fx.GraphModule, plan: GroupPlan) -> set[int]:
    """Consumer uses whose gate goes on the weight: the only gated input of a plain
    ``Linear`` or convolution that is called once (see :mod:`lumos_fx.weight_gates`)."""
    calls, uses = Counter(), Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] += 1
    for use in plan.consumers:
        uses[use.node] += 1
    nodes = {n.name: n for n in gm.graph.nodes}
    chosen = set()
    for use_index, use in enumerate(plan.consumers):
        node = nodes[use.node]
        if (node.op == "call_module" and calls[node.target] == 1 and uses[use.node] == 1
                and use.arg == 0 and use.within is None
                and use.fold == (node.target, "weight", 1) and len(node.args) == 1
                and not node.kwargs and can_gate_weight(gm.get_submodule(node.target))):
            chosen.add(use_index)
    return chosen


def _gate_the_weight(gm, consumer: fx.Node, use_index: int, index_of: str | None,
                     gates: list[fx.Node]) -> None:
    """``conv(x)`` becomes ``conv(x, *gates[, index=...])`` on its weight-gated subclass;
    ``index_of`` names the GateApply holding the gather index (None: the gate itself)."""
    module = gm.get_submodule(consumer.target)
    module.__class__ = weight_gated(type(module))
    kwargs = {}
    if index_of is not None:
        with gm.graph.inserting_before(consumer):
            kwargs["index"] = gm.graph.get_attr(f"lumos_apply.{index_of}.index")
    consumer.args = (consumer.args[0], *gates)
    consumer.kwargs = kwargs
    consumer.meta.setdefault("lumos", {})["weight_gate"] = use_index


def insert_gates(gm: fx.GraphModule, plan: GroupPlan, config: GateConfig | None = None) -> dict[int, str]:
    """Add gates and gate applications to ``gm`` in place; return group index -> gate key."""
    groups = plan.channels.groups()
    taken: set[str] = set()
    keys = {gid: gate_key(groups[gid].name, taken) for gid in _gated_groups(plan)}
    gm.add_module("lumos_gates", GateBank(
        {keys[g]: HardConcreteGate(groups[g].size, config) for g in keys}))
    gm.add_module("lumos_apply", nn.ModuleDict())
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    gate_nodes = {}
    anchor = placeholders[-1] if placeholders else None
    if keys:
        with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(None):
            anchor = bank = graph.call_module("lumos_gates")
    for position, (gid, key) in enumerate(keys.items()):
        with graph.inserting_after(anchor):
            anchor = gate_nodes[gid] = graph.call_function(operator.getitem, (bank, position))
    weight_side = _weight_gated_uses(gm, plan)
    for use_index, use in enumerate(plan.consumers):
        present, index = consumer_index(use.labels, plan, keys)
        if not present:
            continue
        consumer = nodes[use.node]
        source = consumer.args[use.arg]
        rank = len(source.meta["tensor_meta"].shape)
        name = f"a{len(gm.lumos_apply)}"
        gm.lumos_apply[name] = apply_module = GateApply(use.dim, rank, torch.from_numpy(index))
        gates = [gate_nodes[g] for g in present]
        if use_index in weight_side:
            direct = apply_module.identity and len(present) == 1 and \
                groups[present[0]].size == len(index)
            _gate_the_weight(gm, consumer, use_index, None if direct else name, gates)
            continue
        with graph.inserting_before(consumer):
            apply = graph.call_module(f"lumos_apply.{name}", (source, *gates))
        apply.meta["tensor_meta"] = source.meta["tensor_meta"]
        apply.meta["lumos"] = {"labels": source.meta.get("lumos", {}).get("labels"),
                               "use": use_index}
        consumer.update_arg(use.arg, apply)
    graph.lint()
    gm.recompile()
    return keys
