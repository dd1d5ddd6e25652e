"""The rule registry: how each op relates channel spaces, as data.

A rule is a function ``rule(ctx, node) -> labels`` that reads the label
arrays of the node's inputs from the :class:`~lumos_fx.rules.context.RuleContext`,
records producers, consumers, followers, unifications and pins, and returns
the labels of the node's output: a ``dict[int, Labels]`` (dim -> label array)
for a tensor, a tuple of those for a tuple output, or ``None``.

Rules are keyed by module type (looked up along the MRO), by function object
or by method name. An op with no rule pins every channel it touches.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> REGISTRY.has_function(torch.relu) and REGISTRY.has_method("relu")
    True
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx, nn

Rule = Callable[[Any, fx.Node], Any]


class RuleRegistry:
    def __init__(self):
        self._modules: dict[type, Rule] = {}
        self._functions: dict[Any, Rule] = {}
        self._methods: dict[str, Rule] = {}

    def modules(self, *types: type) -> Callable[[Rule], Rule]:
        return self._register(self._modules, types)

    def functions(self, *fns: Any) -> Callable[[Rule], Rule]:
        return self._register(self._functions, fns)

    def methods(self, *names: str) -> Callable[[Rule], Rule]:
        return self._register(self._methods, names)

    def add(self, rule: Rule, *, modules=(), functions=(), methods=()) -> Rule:
        """Register one rule for several keys at once (used for op tables)."""
        for table, keys in ((self._modules, modules), (self._functions, functions),
                            (self._methods, methods)):
            self._register(table, keys)(rule)
        return rule

    @staticmethod
    def _register(table: dict, keys) -> Callable[[Rule], Rule]:
        def decorate(rule: Rule) -> Rule:
            for key in keys:
                if key is not None:
                    table[key] = rule
            return rule
        return decorate

    def has_function(self, fn: Any) -> bool:
        return fn in self._functions

    def has_method(self, name: str) -> bool:
        return name in self._methods

    def lookup(self, node: fx.Node, root: nn.Module) -> Rule | None:
        if node.op == "call_module":
            for cls in type(root.get_submodule(node.target)).__mro__:
                if cls in self._modules:
                    return self._modules[cls]
            return None
        if node.op == "call_function":
            try:
                return self._functions.get(node.target)
            except TypeError:  # unhashable target
                return None
        if node.op == "call_method":
            return self._methods.get(node.target)
        return None


REGISTRY = RuleRegistry()


def optional_function(module: Any, name: str) -> Any:
    """``module.name`` when it exists in this torch version, else None."""
    return getattr(module, name, None)


__all__ = ["REGISTRY", "RuleRegistry", "Rule", "optional_function", "torch"]
