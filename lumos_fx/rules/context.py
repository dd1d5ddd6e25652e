"""What a rule sees and records while the channel groups are built.

``RuleContext`` holds the label arrays of every node already visited and
collects three kinds of facts that later passes use:

* :class:`ParamSpec` - a parameter or buffer whose dims carry labels, so it is
  sliced on extraction and costed in the penalty;
* :class:`ConsumerUse` - a place where a gate multiplies a tensor (a consumer
  reading a channel dim), optionally folded into a weight on extraction;
* unifications and pins, kept in the :class:`~lumos_fx.channels.ChannelGraph`.

Example::

    >>> import torch
    >>> from lumos_fx.rules.context import TensorLabels, broadcast_dims
    >>> broadcast_dims((4, 3, 8), (3, 1))
    [(0, None), (1, 0), (2, 1)]
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx

from ..channels import ChannelGraph, Labels
from .param_views import ParameterViews

TensorLabels = dict  # dim (non-negative) -> Labels

@dataclass
class ParamSpec:
    """A parameter/buffer ``owner.name`` whose dims carry channel labels."""

    owner: str
    name: str
    dims: dict[int, Labels]
    flops_per_entry: float = 0.0
    also: dict[int, list[Labels]] = field(default_factory=dict)
    computed: str | None = None            # a weight computed from parameters: its eval node
    shape: tuple[int, ...] | None = None   # (see lumos_fx.rules.computed_weights)
    constant: bool = False                 # computed from buffers alone: stored as a buffer

    def label_sets(self, dim: int) -> list[Labels]:
        """Every label array a position of ``dim`` must survive to be kept."""
        return [self.dims[dim], *self.also.get(dim, [])]

    @property
    def path(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner else self.name


@dataclass
class ConsumerUse:
    """A gate multiplies ``node.args[arg]`` along ``dim`` before ``node`` reads it.

    ``fold = (owner, param, dim)`` names the weight the gate values fold into on
    extraction; without it, extraction keeps a multiplication by constants.
    """

    node: str
    arg: int
    dim: int
    labels: Labels
    fold: tuple[str, str, int] | None = None
    within: Labels | None = None  # for a position gate: the channel labels of the same dim
    training: bool = False        # which graph: the train graph or the eval graph
    weight_arg: int | tuple | None = None  # where the folded weight sits (gate the weight)


def lookup(root, path: str):
    """The attribute at dotted ``path`` under the module ``root`` (``"fc.weight"``);
    AttributeError when it is missing."""
    owner, name = split_path(path)
    return getattr(root.get_submodule(owner) if owner else root, name)


def split_path(path: str) -> tuple[str, str]:
    """``"blocks.0.fc.weight"`` -> ``("blocks.0.fc", "weight")``: owner and attribute."""
    owner, _, name = path.rpartition(".")
    return owner, name


def arg_at(node: fx.Node, arg):
    """``node.args[arg]``, or ``node.args[i][k]`` for ``arg = (i, k)`` (an op taking a
    list of tensors, such as ``einsum``)."""
    if isinstance(arg, tuple):
        return node.args[arg[0]][arg[1]]
    return node.args[arg]


def replace_arg(node: fx.Node, arg, value) -> None:
    """Set the argument :func:`arg_at` reads."""
    if isinstance(arg, tuple):
        items = list(node.args[arg[0]])
        items[arg[1]] = value
        node.update_arg(arg[0], items)
    else:
        node.update_arg(arg, value)


def broadcast_dims(*shapes) -> list[tuple]:
    """For each output dim of a broadcast, the matching dim of every operand (None if absent)."""
    rank = max(len(s) for s in shapes)
    return [tuple(d - (rank - len(s)) if d >= rank - len(s) else None for s in shapes)
            for d in range(rank)]


class RuleContext(ParameterViews):
    """Facts shared by the rules of both captured graphs (train and eval).

    Producers are keyed by their weight, so both graphs label a layer's channels
    with the same atoms; :meth:`for_graph` switches to the next graph. Only the
    eval graph counts FLOPs.
    """

    def __init__(self, root: fx.GraphModule, channels: ChannelGraph, position_gates: bool = True):
        self.root = root
        self.position_gates = position_gates
        self.channels = channels
        self.training = False
        self.labels: dict[fx.Node, Any] = {}
        self.params: dict[str, ParamSpec] = {}
        self.consumers: list[ConsumerUse] = []
        self._module_rows: dict[str, Labels] = {}
        self._module_cols: dict[str, Labels] = {}
        self.computed_weights: dict[tuple[bool, str], str] = {}   # (graph, node) -> path
        self._materialized: dict[str, tuple[str | None, tuple, bool]] = {}
        self.node: fx.Node | None = None          # the node whose rule runs
        self.param_readers: dict[str, set[fx.Node]] = {}   # path -> nodes that sliced it

    def for_graph(self, root: fx.GraphModule, training: bool) -> "RuleContext":
        self.root, self.training, self.labels = root, training, {}
        return self

    # -- reading ------------------------------------------------------------
    @staticmethod
    def attr(value: Any) -> str | None:
        """The parameter/buffer path a ``get_attr`` node reads, else None."""
        return value.target if isinstance(value, fx.Node) and value.op == "get_attr" else None

    def tensor(self, value: Any):
        path = self.attr(value)
        return None if path is None else lookup(self.root, path)

    def shape(self, value: Any) -> tuple[int, ...] | None:
        meta = value.meta.get("tensor_meta") if isinstance(value, fx.Node) else None
        shape = getattr(meta, "shape", None)
        return tuple(shape) if shape is not None else None

    def of(self, value: Any) -> Any:
        """Labels of an argument (a node's labels, or None for constants)."""
        return self.labels.get(value) if isinstance(value, fx.Node) else None

    def arg(self, node: fx.Node, index: int, name: str | None = None, default: Any = None) -> Any:
        """Argument ``name`` of ``node``: for an op with a schema, wherever that op's schema
        puts it (``default`` when it has none: ``std.default`` has no ``dim``), so one rule
        reads every overload of a packet right (``std.dim`` has ``unbiased`` before
        ``keepdim``); else ``node.args[index]`` or the keyword."""
        positions = _positions(node.target) if name else None
        if positions is not None:
            if name not in positions:
                return default
            index = positions[name]
            if index is None:
                return node.kwargs.get(name, default)
        if index < len(node.args):
            return node.args[index]
        return node.kwargs.get(name, default) if name else default

    # -- recording ----------------------------------------------------------
    def produce(self, node: fx.Node, size: int, kind: str = "producer", key: str | None = None,
                name: str | None = None) -> Labels:
        """Fresh atoms for ``size`` output rows; one set per weight (weight sharing) or
        per ``key``, so the train and eval graphs get the same atoms."""
        key = key or node.name
        if key not in self._module_rows:
            self._module_rows[key] = self.channels.new_space(str(name or key), size, kind)
        return self._module_rows[key]

    def consume(self, node: fx.Node, arg, dim: int, fold: tuple[str, str, int] | None = None,
                weight_arg=None):
        """Gate ``node.args[arg]`` along ``dim`` (if that dim carries labels); with
        ``weight_arg``, the gate may multiply that weight argument along ``fold``'s dim."""
        labels = (self.of(arg_at(node, arg)) or {}).get(dim)
        if labels is None:
            return None
        return self.consume_labels(node, arg, dim, labels, fold, weight_arg)

    def consume_labels(self, node: fx.Node, arg, dim: int, labels: Labels,
                       fold: tuple[str, str, int] | None = None, weight_arg=None) -> Labels:
        """Record a gated use with explicit ``labels``: a layer reading channels that are
        not one of its inputs (a recurrent layer's own hidden state, read through its
        ``weight_hh`` columns). ``arg`` is then the weight itself."""
        source = arg_at(node, arg)
        if dim in getattr(source, "meta", {}).get("lumos", {}).get("symbolic", {}):
            self.pin(labels, f"{node.name}: reads channels along a dim whose size varies "
                             "(merged with the batch)")
            return None
        if fold is not None:     # a weight shared by layers: its columns are one channel set
            owner, name, along = fold
            seen = self._module_cols.setdefault(f"{owner}.{name}:{along}", labels)
            if seen is not labels:
                self.channels.unify(seen, labels, f"shared weight {owner}.{name}")
        self.consumers.append(ConsumerUse(node.name, arg, dim, labels, fold,
                                          training=self.training, weight_arg=weight_arg))
        return labels

    def position_gate(self, node: fx.Node, arg: int, dim: int, channels: Labels,
                      fold: tuple[str, str, int]) -> None:
        """A finer gate on single positions of a flattened dim (DESIGN.md §4).

        After ``conv -> flatten -> linear`` each conv channel is a block of
        columns; this gate can also close single columns. Extraction turns closed
        positions of kept channels into an ``index_select`` before the layer.
        """
        atoms = channels[channels >= 0]
        if len(np.unique(atoms)) == len(atoms):
            return
        owner, name, param_dim = fold
        path = f"{owner}.{name}" if owner else name
        positions = self.produce(node, len(channels), kind="positions", key=f"{owner or path}:positions")
        self.consumers.append(ConsumerUse(node.name, arg, dim, positions, fold, within=channels,
                                          training=self.training))
        also = self.params[path].also.setdefault(param_dim, [])
        if not any(existing is positions for existing in also):
            also.append(positions)

    def materialize(self, path: str, value: fx.Node, constant: bool = False) -> None:
        """``path`` names the weight ``value`` computes (from parameters alone; from
        buffers alone when ``constant``)."""
        name, shape, _ = self._materialized.get(path, (None, self.shape(value), constant))
        self._materialized[path] = (value.name if not self.training else name, shape, constant)

    def pin_one_sided_weights(self) -> None:
        """Pin the channels of a computed weight only one of the graphs could slice (the
        other reads it updated in place, as ``spectral_norm`` does in training): a gate
        would act in one mode only."""
        claims: dict[str, set[bool]] = {}
        for (training, _), path in self.computed_weights.items():
            claims.setdefault(path, set()).add(training)
        for path, seen in claims.items():
            spec = self.params.get(path)
            if spec is not None and seen != {False, True}:
                for dim in spec.dims:
                    for labels in spec.label_sets(dim):
                        self.pin(labels, f"{path}: a weight computed in one mode only")

    def param(self, path: str, dims: dict[int, Labels | None],
              flops_per_entry: float = 0.0) -> None:
        """Parameter or buffer ``path`` (``"fc.weight"``) carries ``dims``' labels."""
        dims = {d: lab for d, lab in dims.items() if lab is not None}
        if self.node is not None:
            self.param_readers.setdefault(path, set()).add(self.node)
        if self.training:   # the eval graph already counted this use's FLOPs
            flops_per_entry = 0.0
        spec = self.params.get(path)
        if spec is None:
            computed, shape, constant = self._materialized.get(path, (None, None, False))
            self.params[path] = ParamSpec(*split_path(path), dims, flops_per_entry,
                                          computed=computed, shape=shape, constant=constant)
            return
        for d, lab in dims.items():
            if d in spec.dims:
                self.channels.unify(spec.dims[d], lab, f"shared parameter {path}")
            else:
                self.pin(lab, f"shared parameter {path} is used along different dims")
        spec.flops_per_entry += flops_per_entry

    def pin(self, labels: Labels | None, reason: str) -> None:
        if labels is not None:
            self.channels.pin(labels, reason)

    def pin_value(self, value: Any, reason: str) -> None:
        """Pin every labeled dim of a tensor's labels, a tuple of them, or a node."""
        if isinstance(value, fx.Node):
            value = self.of(value)
        if isinstance(value, dict):
            for lab in value.values():
                self.pin(lab, reason)
        elif isinstance(value, (tuple, list)):
            for item in value:
                self.pin_value(item, reason)
        elif hasattr(value, "labels"):  # the labels behind a `.shape`
            self.pin_value(value.labels, reason)

    def pin_inputs(self, node: fx.Node, reason: str) -> None:
        for value in node.all_input_nodes:
            self.pin_value(value, reason)

    def unify(self, a: Labels, b: Labels, reason: str = "unified with a fixed channel") -> None:
        self.channels.unify(a, b, reason)


@functools.lru_cache(maxsize=None)
def _positions(target) -> dict[str, int | None] | None:
    """``{argument name: position}`` of an op's schema (None for keyword-only ones), or
    None for a target without a schema (``operator.getitem``)."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return None
    return {a.name: None if a.kwarg_only else i for i, a in enumerate(schema.arguments)}


def unlabeled(size: int) -> Labels:
    """A label array for ``size`` positions that can never be removed."""
    return np.full(size, -1, dtype=np.int64)
