"""The rule registry: how each aten op relates channel spaces, as data.

A rule is a function ``rule(ctx, node) -> labels`` that reads the label
arrays of the node's inputs from the :class:`~lumos_fx.rules.context.RuleContext`,
records producers, consumers, followers, unifications and pins, and returns
the labels of the node's output: a ``dict[int, Labels]`` (dim -> label array)
for a tensor, a tuple of those for a tuple output, or ``None``.

Rules are keyed by the ops ``torch.export`` emits: an ``OpOverload``
(``aten.linear.default``), a whole ``OpOverloadPacket`` (``aten.sum``, every
overload), or a plain function (``operator.getitem``). Ops tagged
``pointwise`` that have no rule of their own fall back to the elementwise rule
(see :mod:`lumos_fx.rules.elementwise`). An op with no rule pins every
channel it touches.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> aten = torch.ops.aten
    >>> REGISTRY.find(aten.linear.default) is not None, REGISTRY.find(aten.gelu.default) is not None
    (True, True)
    >>> REGISTRY.find(aten.masked_select.default) is None      # flattens: unknown, pins
    True
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx

Rule = Callable[[Any, fx.Node], Any]
aten = torch.ops.aten


class RuleRegistry:
    def __init__(self):
        self._rules: dict[Any, Rule] = {}
        self._named: dict[str, Rule] = {}
        self.pointwise: Rule | None = None

    def ops(self, *ops: Any) -> Callable[[Rule], Rule]:
        """Register a rule for ops (overloads, packets or functions); missing ones are skipped."""
        def decorate(rule: Rule) -> Rule:
            for op in ops:
                if op is not None:
                    self._rules[op] = rule
            return rule
        return decorate

    def add(self, rule: Rule, ops) -> Rule:
        return self.ops(*ops)(rule)

    def named(self, *names: str) -> Callable[[Rule], Rule]:
        """Register a rule for custom ops by qualified name (``"library::op"``), every
        overload: a library registers its ops when it is imported, maybe after this."""
        def decorate(rule: Rule) -> Rule:
            self._named.update(dict.fromkeys(names, rule))
            return rule
        return decorate

    def find(self, target: Any) -> Rule | None:
        try:
            rule = self._rules.get(target)
        except TypeError:  # unhashable target
            return None
        if rule is None and isinstance(target, torch._ops.OpOverload):
            rule = self._rules.get(target.overloadpacket) or self._named.get(target._schema.name)
            if rule is None and torch.Tag.pointwise in target.tags:
                rule = self.pointwise
        return rule

    def lookup(self, node: fx.Node) -> Rule | None:
        return self.find(node.target) if node.op == "call_function" else None


REGISTRY = RuleRegistry()


def packets(*names: str) -> list:
    """The aten op packets of these names that this torch version has."""
    return [getattr(aten, name) for name in names if hasattr(aten, name)]


__all__ = ["REGISTRY", "RuleRegistry", "Rule", "aten", "packets"]
