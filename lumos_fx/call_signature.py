"""Call a captured model the way the original is called.

A captured graph takes exactly the inputs the model was captured with, so
``model(x, mask=None)`` (a keyword left at its default) or ``model(x=x)`` would
fail on it. :class:`CallSignature` maps a call on the original ``forward``
signature onto the captured inputs: arguments that were not captured are
accepted at their default value and dropped; any other value for them is an
error that says to compile with it. The gated model calls it in ``forward``; the
extracted model carries it as a forward pre-hook.

Example::

    >>> import torch
    >>> from lumos_fx.call_signature import CallSignature
    >>> class Net(torch.nn.Module):
    ...     def forward(self, x, mask=None, scale=1.0):
    ...         return x
    >>> sig = CallSignature(Net(), captured=("x",))
    >>> x = torch.ones(1)
    >>> sig.bind((x,), {"mask": None})[0][0] is x
    True
    >>> sig.bind((x,), {"mask": x})
    Traceback (most recent call last):
    ...
    lumos_fx.errors.InputError: argument 'mask' was not among the example inputs given to lumos.compile, so the compiled model only accepts its default (None); compile with an example value for it
"""
from __future__ import annotations

import inspect

from torch import nn

from .errors import InputError

_NO_DEFAULT = "<no default>"


def _simple(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class CallSignature:
    """The original ``forward``'s parameters and which of them were captured."""

    def __init__(self, model: nn.Module, captured: tuple[str, ...]):
        self.captured = tuple(captured)
        try:
            params = list(inspect.signature(model.forward).parameters.values())
        except (TypeError, ValueError):
            params = []
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                 inspect.Parameter.KEYWORD_ONLY)
        self.positional = tuple(p.name for p in params if p.kind in plain[:2])
        self.defaults = {p.name: (p.default if _simple(p.default) else _NO_DEFAULT)
                         for p in params if p.kind in plain and p.default is not p.empty}
        self.names = {p.name for p in params if p.kind in plain}
        self.known = bool(params) and all(p.kind in plain for p in params) and \
            set(self.captured) <= self.names

    def needs_binding(self) -> bool:
        """Whether a call can differ from the captured inputs: the original takes other
        arguments (with defaults), in another order, or keyword-only ones."""
        return self.known and (self.positional != self.captured
                               or self.names != set(self.captured))

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for the captured graph."""
        if not kwargs and len(args) == len(self.captured) or not self.known:
            return args, kwargs
        if len(args) > len(self.positional):
            raise InputError(f"the model takes {len(self.positional)} positional arguments "
                             f"({', '.join(self.positional)}), got {len(args)}")
        given = dict(zip(self.positional, args))
        for name, value in kwargs.items():
            if name not in self.names or name in given:
                raise InputError(f"unexpected or repeated argument {name!r}; the model's "
                                 f"arguments are {', '.join(sorted(self.names))}")
            given[name] = value
        missing = [name for name in self.captured if name not in given]
        if missing:
            raise InputError(f"missing argument(s) {', '.join(missing)}")
        for name, value in given.items():
            if name in self.captured:
                continue
            default = self.defaults.get(name, _NO_DEFAULT)
            if default is _NO_DEFAULT or not (value is default or (
                    _simple(value) and type(value) is type(default) and value == default)):
                raise InputError(
                    f"argument {name!r} was not among the example inputs given to "
                    f"lumos.compile, so the compiled model only accepts its default "
                    f"({default!r}); compile with an example value for it")
        return tuple(given[name] for name in self.captured), {}

    def __call__(self, module, args, kwargs):
        """As a forward pre-hook (``with_kwargs=True``)."""
        return self.bind(args, kwargs)
