"""Checks on what users pass to ``compile`` and ``extract``: clear errors, no guessing.

Example::

    >>> from lumos_fx.validate import check_lam
    >>> check_lam(0.5, None)
    0.5
    >>> check_lam(-1, None)
    Traceback (most recent call last):
    ...
    lumos_fx.errors.InputError: lam must be a finite number >= 0, got -1
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import fx, nn

from .errors import InputError, LumosError
from .naming import gates_by_name
from .verify import eval_mode_error


def check_example_inputs(model: nn.Module, example_inputs) -> tuple:
    if example_inputs is None:
        raise InputError(
            "example_inputs is required: lumos_fx needs one batch to learn the tensor shapes, "
            "e.g. lumos.compile(model, example_inputs=(x_batch,))")
    if isinstance(example_inputs, torch.Tensor) or not isinstance(example_inputs, (tuple, list)):
        raise InputError(
            f"example_inputs must be a tuple of the model's positional inputs, got "
            f"{type(example_inputs).__name__}; write example_inputs=(x,) for a single input")
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return tuple(example_inputs)
    if not any(p.kind is p.VAR_POSITIONAL for p in params):
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(example_inputs) > len(positional):
            raise InputError(
                f"example_inputs has {len(example_inputs)} values but "
                f"{type(model).__name__}.forward takes {len(positional)} positional arguments "
                f"({', '.join(p.name for p in positional)})")
    for value in example_inputs:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and \
                not torch.isfinite(value).all():
            raise InputError("example_inputs contain NaN or infinite values; pass a clean batch")
    return tuple(example_inputs)


def check_lam(lam, budget) -> float:
    if budget is not None and lam != 1.0:
        raise InputError("pass either lam= or budget=, not both: with a budget the penalty's "
                         "weight is set by the budget controller")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) \
            or lam < 0:
        raise InputError(f"lam must be a finite number >= 0, got {lam!r}")
    return float(lam)


def check_input_dims(input_dims, gm: fx.GraphModule) -> dict:
    """``input_dims`` names real inputs and dims within their rank."""
    if input_dims is None:
        return {}
    if not isinstance(input_dims, dict):
        raise InputError(f"input_dims must be a dict input name -> dim (or None), got "
                         f"{type(input_dims).__name__}")
    shapes = {n.target: getattr(n.meta.get("tensor_meta"), "shape", None)
              for n in gm.graph.nodes if n.op == "placeholder"}
    for name, dim in input_dims.items():
        if name not in shapes:
            raise InputError(f"input_dims names {name!r}, but the model's inputs are "
                             f"{sorted(shapes)}")
        if dim is None:
            continue
        shape = shapes[name]
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise InputError(f"input_dims[{name!r}] must be an int dim or None, got {dim!r}")
        if shape is None or not -len(shape) <= dim < len(shape):
            raise InputError(f"input_dims[{name!r}] = {dim} is out of range for input {name!r} "
                             f"of shape {tuple(shape) if shape is not None else '()'}")
        if dim % len(shape) == 0:
            raise InputError(f"input_dims[{name!r}] = {dim} is the batch dim; name the feature "
                             f"dim, or None to leave the input ungated")
    return dict(input_dims)


def check_eval_identity(model: nn.Module, gated: nn.Module, inputs: tuple,
                        rtol: float = 1e-5) -> float:
    """With all gates open, ``gated.eval()`` must compute what ``model.eval()`` does."""
    error = eval_mode_error(model, gated, inputs, inputs, "the gated model")
    if not error <= rtol:
        raise LumosError(
            f"the captured eval-mode graph of {type(model).__name__} differs from "
            f"model.eval() on the example inputs (relative error {error:.3g}); the forward "
            f"has effects torch.export does not record (Python state, global flags, "
            f"randomness in eval mode). Move them out of forward.")
    return error


def check_gates_finite(gated: nn.Module) -> None:
    """NaN or infinite ``log_alpha`` (a NaN loss reached the gates) is an error."""
    bad = [name for name, gate in gates_by_name(gated).items()
           if not torch.isfinite(gate.log_alpha.detach()).all()]
    if bad:
        raise InputError(
            f"gates {', '.join(bad)} have NaN or infinite log_alpha (a NaN or infinite loss "
            f"reached them); restore a checkpoint from before the NaN and lower the learning "
            f"rate, or clip gradients")
