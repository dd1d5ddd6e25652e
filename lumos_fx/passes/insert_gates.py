"""Insert one gate per group and a gate multiplication at every consumer input.

Gates sit at consumer inputs (paper: "gates at layer inputs"), so a
deterministic gate value folds exactly into the consumer's weight columns on
extraction. For a ``linear`` or convolution the gate multiplies those weight
columns already while training: ``conv(x * z) == conv(x, W * z)`` exactly, and
the weight is far smaller than a CNN's activations. Each gated group gets one
:class:`~lumos_fx.gates.HardConcreteGate` in ``lumos_gates`` (a
:class:`~lumos_fx.gate_bank.GateBank`, called once per forward: every consumer of
a group sees the same sample); each consumer use gets a
:class:`~lumos_fx.gate_apply.GateApply` in ``lumos_apply``. Both captured graphs
(train and eval) get their own applications of the same gates.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> gated = lumos.compile(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
    ...                                           torch.nn.Linear(8, 1)),
    ...                       example_inputs=(torch.randn(4, 3),))
    >>> [n.target for n in gated.graph.nodes if n.op == "call_module"]
    ['lumos_gates', 'lumos_apply.e0', 'lumos_apply.e1']
    >>> [n.args[1].name for n in gated.graph.nodes if "linear" in n.name]   # gated weights
    ['lumos_apply_e0', 'lumos_apply_e1']
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
from ..rules.context import arg_at, replace_arg
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


def _insert_in_graph(gm: fx.GraphModule, plan: GroupPlan, keys: dict[int, str],
                     training: bool, apply_modules: nn.ModuleDict) -> None:
    """The gate bank call and one ``GateApply`` per consumer use of this graph."""
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    anchor = placeholders[-1] if placeholders else None
    gate_nodes = {}
    if keys:
        with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(None):
            anchor = bank = graph.call_module("lumos_gates")
    for position, gid in enumerate(keys):
        with graph.inserting_after(anchor):
            anchor = gate_nodes[gid] = graph.call_function(operator.getitem, (bank, position))
    prefix = "t" if training else "e"
    count = sum(name.startswith(prefix) for name in apply_modules)
    for use_index, use in enumerate(plan.consumers):
        if use.training != training:
            continue
        present, index = consumer_index(use.labels, plan, keys)
        if not present:
            continue
        consumer = nodes[use.node]
        on_weight = use.weight_arg is not None and use.within is None
        arg, dim = (use.weight_arg, use.fold[2]) if on_weight else (use.arg, use.dim)
        source = arg_at(consumer, arg)
        rank = len(source.meta["tensor_meta"].shape)
        name = f"{prefix}{count}"
        count += 1
        apply_modules[name] = GateApply(dim, rank, torch.from_numpy(index))
        with graph.inserting_before(consumer):
            apply = graph.call_module(f"lumos_apply.{name}",
                                      (source, *[gate_nodes[g] for g in present]))
        apply.meta["tensor_meta"] = source.meta["tensor_meta"]
        apply.meta["lumos"] = {"labels": source.meta.get("lumos", {}).get("labels"),
                               "use": use_index}
        replace_arg(consumer, arg, apply)
    graph.lint()
    gm.recompile()


def insert_gates(graphs: dict[bool, fx.GraphModule], plan: GroupPlan,
                 config: GateConfig | None = None) -> dict[int, str]:
    """Add the gates to the shared state of ``graphs`` and gate applications to each
    graph, in place; return group index -> gate key."""
    groups = plan.channels.groups()
    taken: set[str] = set()
    keys = {gid: gate_key(groups[gid].name, taken) for gid in _gated_groups(plan)}
    bank = GateBank({keys[g]: HardConcreteGate(groups[g].size, config) for g in keys})
    apply_modules = nn.ModuleDict()
    for gm in graphs.values():
        gm.add_module("lumos_gates", bank)
        gm.add_module("lumos_apply", apply_modules)
    for training, gm in graphs.items():
        _insert_in_graph(gm, plan, keys, training, apply_modules)
    return keys
