"""Errors raised by lumos_fx.

Every error names the problem and the fix. ``TraceError`` additionally quotes
the user's source line that could not be traced.

Example::

    >>> import lumos_fx
    >>> issubclass(lumos_fx.TraceError, lumos_fx.LumosError)
    True
"""


class LumosError(Exception):
    """Base class of every error lumos_fx raises on purpose."""


class TraceError(LumosError):
    """``torch.export`` could not capture the model, or captured it in a way that would
    be silently wrong (a batch size baked into a constant).

    The message quotes the offending line of the user's code and the remedy.
    """


class InputError(LumosError):
    """The arguments given to a lumos_fx function are unusable (wrong example
    inputs, unknown options, a module that was not compiled by lumos_fx)."""


class ExactnessError(LumosError):
    """An extracted model does not compute what the gated model computes.

    This is never expected; it means a rule is wrong. Please report the model.
    """
