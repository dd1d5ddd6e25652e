"""Check the exactness invariant: the extracted model computes what the gated one does.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x = torch.randn(16, 4)
    >>> gated = lumos.compile(model, example_inputs=(x,))
    >>> pruned = lumos.extract(gated)
    >>> lumos.verify(gated, pruned, (x,)) < 1e-6
    True
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from .errors import ExactnessError
from .state import state_of, unwrap


def relative_error(expected, actual) -> float:
    """Largest ``||a - e|| / max(||e||, tiny)`` over the tensors of two outputs."""
    worst = 0.0
    for e, a in zip(tree_leaves(expected), tree_leaves(actual), strict=True):
        if not isinstance(e, torch.Tensor):
            continue
        e, a = e.detach().double(), a.detach().double()
        if e.shape != a.shape:
            return float("inf")
        scale = max(e.norm().item(), torch.finfo(torch.float32).tiny)
        worst = max(worst, (a - e).norm().item() / scale)
    return worst


def model_inputs(gated: nn.Module, inputs: tuple) -> tuple:
    """``inputs`` with floating tensors on the dtype and device of the gated model's
    parameters (after ``.double()`` or ``.to(device)``)."""
    params = [p for name, p in gated.named_parameters() if not name.startswith("lumos_")]
    if not params:
        return tuple(inputs)
    # the dtype of the first real floating parameter: a complex spectral weight (an FNO's)
    # may come first, and would turn real inputs complex
    reference = next((p for p in params if p.is_floating_point()), params[0])
    return tuple(x.to(device=reference.device,
                      dtype=reference.dtype if x.is_floating_point() and
                      reference.is_floating_point() else x.dtype)
                 if isinstance(x, torch.Tensor) else x for x in inputs)


def eval_mode_error(expected: nn.Module, actual: nn.Module, expected_inputs: tuple,
                    actual_inputs: tuple, actual_name: str = "the extracted model") -> float:
    """Relative error of ``actual`` against ``expected``, both run in eval mode without
    gradients; their modes are restored. Raises :class:`~lumos_fx.ExactnessError` when
    ``actual`` fails to run where ``expected`` ran."""
    modes = expected.training, actual.training
    expected.eval(), actual.eval()
    try:
        with torch.no_grad():
            reference = expected(*expected_inputs)
            try:
                output = actual(*actual_inputs)
            except (RuntimeError, IndexError, ValueError) as error:
                raise ExactnessError(
                    f"{actual_name} fails on inputs {type(expected).__name__} runs on: "
                    f"{type(error).__name__}: {error}. This is a lumos_fx bug; please report "
                    f"the model.") from error
            return relative_error(reference, output)
    finally:
        expected.train(modes[0]), actual.train(modes[1])


def verify(gated: nn.Module, pruned: nn.Module, inputs: tuple | None = None,
           rtol: float = 1e-5) -> float:
    """Run both models in eval mode on ``inputs`` and return the relative error.

    ``inputs`` defaults to the example inputs given to ``compile``. Raises
    :class:`~lumos_fx.ExactnessError` when the error exceeds ``rtol``.
    """
    gated = unwrap(gated)
    state = state_of(gated)
    inputs = model_inputs(gated, state.example_inputs) if inputs is None else tuple(inputs)
    kept = getattr(pruned, "lumos_kept_inputs", {})
    pruned_inputs = tuple(inputs)
    if getattr(pruned, "lumos_input_mode", "full") == "kept":
        names = [n.target for n in gated.graph.nodes if n.op == "placeholder"]
        pruned_inputs = tuple(x.index_select(state.plan.inputs[name][0],
                                             torch.as_tensor(kept[name], device=x.device))
                              if name in kept and name not in state.plan.categorical else x
                              for name, x in zip(names, inputs))
    error = eval_mode_error(gated, pruned, inputs, pruned_inputs)
    if not error <= rtol:
        raise ExactnessError(
            f"the extracted model differs from the gated model by a relative error of "
            f"{error:.3g} (allowed {rtol:g}). This is a lumos_fx bug; please report the model.")
    return error
