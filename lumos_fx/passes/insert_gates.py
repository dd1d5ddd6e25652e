"""Insert one gate per group and a gate multiplication at every consumer input.

Gates sit at consumer inputs (paper: "gates at layer inputs"), so a
deterministic gate value folds exactly into the consumer's weight columns on
extraction. Each gated group gets one :class:`~lumos_fx.gates.HardConcreteGate`
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
    (['input', 'm0'], ['lumos_gates', 'lumos_apply.a0', '0', '1', 'lumos_apply.a1', '2'])
"""
from __future__ import annotations

import operator
import re

import numpy as np
import torch
from torch import fx, nn

from ..gate_apply import GateApply
from ..gate_bank import GateBank
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
    for use_index, use in enumerate(plan.consumers):
        present, index = consumer_index(use.labels, plan, keys)
        if not present:
            continue
        consumer = nodes[use.node]
        source = consumer.args[use.arg]
        rank = len(source.meta["tensor_meta"].shape)
        name = f"a{len(gm.lumos_apply)}"
        gm.lumos_apply[name] = GateApply(use.dim, rank, torch.from_numpy(index))
        with graph.inserting_before(consumer):
            apply = graph.call_module(f"lumos_apply.{name}",
                                      (source, *[gate_nodes[g] for g in present]))
        apply.meta["tensor_meta"] = source.meta["tensor_meta"]
        apply.meta["lumos"] = {"labels": source.meta.get("lumos", {}).get("labels"),
                               "use": use_index}
        consumer.update_arg(use.arg, apply)
    graph.lint()
    gm.recompile()
    return keys
