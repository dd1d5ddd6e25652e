"""``compile`` and ``extract``: run the passes in order.

``compile``: deep-copy the model, trace it, propagate shapes on the example
inputs, build channel groups, insert gates, attach the expected-cost model.
``extract``: shrink the gated model and check the result against it.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x = torch.randn(16, 4)
    >>> gated = lumos.compile(model, example_inputs=(x,))
    >>> torch.equal(gated.eval()(x), model(x))
    True
    >>> sorted(lumos.gates(gated))
    ['0', 'input']
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from typing import Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from .budget import BudgetController, as_budget, budget_penalty, warn_if_off_budget
from .cost import ExpectedCost
from .errors import InputError
from .feature_cost import check_feature_cost, feature_penalty
from .gates import GateConfig, HardConcreteGate
from .passes.build_groups import build_groups
from .passes.insert_gates import insert_gates
from .passes.shape_prop import propagate_shapes
from .passes.shrink import shrink
from .naming import gates_by_name
from .state import LumosState, state_of, unwrap
from .call_signature import CallSignature
from .capture import batch_of_two, capture, default_dynamic_dims, the_model_inside
from .prunability import check_prunable
from .gated_module import GatedModule
from .input_guard import InputShapes
from .validate import (check_eval_identity as _check_eval_identity,
                       check_example_inputs as _check_example_inputs,
                       check_input_dims as _check_input_dims, check_lam as _check_lam,
                       check_gates_finite)
from .verify import model_inputs, verify

DEFAULT_LAMBDA = 1.0


def _feature_names(feature_names, plan) -> dict[str, list[str]]:
    names = {}
    for name, (dim, labels) in plan.inputs.items():
        names[name] = [f"{name}[{i}]" for i in range(len(labels))]
    if feature_names is None:
        return names
    if not isinstance(feature_names, dict):
        if len(plan.inputs) != 1:
            raise InputError("the model has several gated inputs; pass feature_names as a dict "
                             f"keyed by input name: {sorted(plan.inputs)}")
        feature_names = {next(iter(plan.inputs)): feature_names}
    for name, given in feature_names.items():
        if name not in names:
            raise InputError(f"feature_names names input {name!r}, but the gated inputs are "
                             f"{sorted(plan.inputs)}")
        if len(given) != len(names[name]):
            dim = plan.inputs[name][0]
            raise InputError(f"feature_names[{name!r}] has {len(given)} names but input {name!r} "
                             f"has {len(names[name])} features along dim {dim}; if the features "
                             f"are on another dim, say which with input_dims={{{name!r}: dim}}")
        names[name] = [str(n) for n in given]
    return names


def compile(model: nn.Module, example_inputs: Sequence[torch.Tensor] | None = None, *,
            lam: float = DEFAULT_LAMBDA, feature_names=None, input_dims: dict | None = None,
            dynamic_shapes=None, gate_config: GateConfig | None = None, budget=None,
            feature_cost: float = 0.0):
    """Return a gated copy of ``model`` (a :class:`~lumos_fx.gated_module.GatedModule`).

    Args:
        model: any ``nn.Module`` that ``torch.export`` can capture; it is never modified.
            A ``torch.compile``, ``DataParallel`` or ``DistributedDataParallel`` wrapper
            is looked through: the gated model copies the module inside (wrap that again).
        example_inputs: a tuple with one batch of the model's positional inputs.
        lam: weight of the complexity penalty, which is the expected fraction of the
            parameters kept; the default 1.0 suits losses of order 1 (standardised targets).
        feature_names: names of the input features (a list for a single input, or a
            dict input name -> list).
        input_dims: per input name, the feature dim to gate, or None to leave that
            input ungated; by default the dim the model reads as channels (the last
            dim before a linear layer, dim 1 before a convolution).
        dynamic_shapes: ``torch.export`` dynamic shapes for the example inputs; by
            default the batch, the time of ``(B, T, F)`` inputs and every dim of integer
            inputs are dynamic (see ``lumos_fx.capture.default_dynamic_shapes``).
        gate_config: hard-concrete constants and semi-stochastic thresholds.
        budget: a target size instead of ``lam``: a float is the fraction of the
            parameters kept, ``Budget(flops=0.25)`` a fraction of the FLOPs; the
            penalty then becomes a Lagrangian controller (see ``lumos_fx.budget``).
        feature_cost: extra pressure on the input features, on top of ``lam`` or the
            budget: ``penalty`` adds ``feature_cost`` times the expected fraction of
            input features kept, so features are kept for what they are worth to the
            loss, not for the size of the layer reading them (see
            ``lumos_fx.feature_cost``; 0.0, the default, adds nothing).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"lumos.compile expects an nn.Module, got {type(model).__name__}")
    model = the_model_inside(model)
    if unwrap(model).__dict__.get("lumos_state") is not None:
        raise InputError("this model was already compiled by lumos_fx; train it, then "
                         "lumos.extract(gated) gives the pruned model (compile the original "
                         "model to start over)")
    example_inputs = _check_example_inputs(model, example_inputs)
    lam = _check_lam(lam, budget)
    budget = as_budget(budget)
    if gate_config is not None and not isinstance(gate_config, GateConfig):
        raise InputError(f"gate_config must be a lumos.GateConfig, got {type(gate_config).__name__}")
    work = copy.deepcopy(model)
    graphs = capture(work, example_inputs, dynamic_shapes=dynamic_shapes)
    for gm in graphs.values():
        propagate_shapes(gm, example_inputs)
    input_shapes = InputShapes.from_graph(graphs[True]).merged(InputShapes.from_graph(graphs[False]))
    if dynamic_shapes is None:      # a time dim an op's kernel fixed may still be free
        args = batch_of_two(example_inputs, {})[0]
        input_shapes = input_shapes.freeing_generic_dims(
            work, graphs[False], args, [default_dynamic_dims(v) for v in tree_leaves(args)])
    input_dims = _check_input_dims(input_dims, graphs[False])
    plan = build_groups(graphs, input_dims)
    feature_cost = check_feature_cost(feature_cost, plan)
    keys = insert_gates(graphs, plan, gate_config)
    captured = tuple(n.target for n in graphs[False].graph.nodes if n.op == "placeholder")
    gated = GatedModule(graphs, None, type(model).__name__, CallSignature(model, captured))
    gated.__dict__["input_shapes"] = input_shapes
    gated.add_module("lumos_cost", ExpectedCost(plan, keys, gated))
    if budget is not None:
        gated.add_module("lumos_budget", BudgetController(budget))
    reference = next(iter(work.parameters()), None)
    if reference is not None:
        # a float64 model gets float64 gates (its gradients and penalty stay float64);
        # half-precision models keep float32 gates, whose log_alpha and Adam need the range
        wide = any(p.dtype == torch.float64 for p in work.parameters())
        for name in ("lumos_gates", "lumos_apply", "lumos_cost", "lumos_budget"):
            if hasattr(gated, name):
                getattr(gated, name).to(device=reference.device,
                                        dtype=torch.float64 if wide else None)
    gated.__dict__["lumos_state"] = LumosState(
        plan=plan, keys=keys, config=gate_config or GateConfig(), lam=lam,
        # a private copy: a view would keep the user's whole tensor alive and see its changes
        example_inputs=tuple(x.detach().clone() if isinstance(x, torch.Tensor) else x
                             for x in example_inputs),
        feature_names=_feature_names(feature_names, plan),
        model_name=type(model).__name__, feature_cost=feature_cost)
    _check_eval_identity(work, gated, example_inputs)
    check_prunable(gated, plan, budget)
    gated.train(model.training)
    return gated


def gates(gated: nn.Module) -> dict[str, HardConcreteGate]:
    """The gates of a gated model, by group name: the dotted module path of the layer
    that produces the channels (``layer1.0.conv1``) or the input's name (``input``),
    as ``report()`` names them. A gate's ``state_dict`` key (dots replaced,
    ``layer1_0_conv1``) is accepted for lookup too (see :mod:`lumos_fx.naming`)."""
    return gates_by_name(gated)


def expected_cost(gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected (parameters, FLOPs) of the model ``extract`` would return."""
    module = unwrap(gated)
    state_of(module)
    with _full_precision(module):
        return module.lumos_cost.expected(module)


def _full_precision(module: nn.Module):
    """A context that turns ``torch.autocast`` off on the device of the model's gates
    (nothing to enter, at every training step, when it is not on)."""
    device = module.lumos_cost.weights.device.type      # (moves with the gates)
    if not torch.is_autocast_enabled(device):
        return _NOTHING
    return torch.autocast(device, enabled=False)


_NOTHING = contextlib.nullcontext()


def penalty(gated: nn.Module) -> torch.Tensor:
    """``lam * E[params of the extracted model] / params of the original`` (paper Eq. 6).

    With a budget, the controller's penalty instead (see ``lumos_fx.budget``); either
    way plus ``feature_cost`` times the expected fraction of input features kept when
    the model was compiled with one (see ``lumos_fx.feature_cost``).
    """
    state = state_of(gated)
    module = unwrap(gated)
    with _full_precision(module):     # under torch.autocast the cost's products stay float32
        if hasattr(module, "lumos_budget"):
            value = budget_penalty(module)
        else:
            value = module.lumos_cost.scaled_params(module,
                                                    state.lam / module.lumos_cost.total_params)
        if state.feature_cost:
            value = value + feature_penalty(module)
    if value.requires_grad and not module.training and "_lumos_eval_warned" not in module.__dict__:
        value.register_hook(functools.partial(_warn_trained_in_eval, module))
    return value


def _warn_trained_in_eval(module: nn.Module, grad: torch.Tensor) -> None:
    """Backward reached a penalty computed in eval mode: the user trains an eval-mode model."""
    if "_lumos_eval_warned" not in module.__dict__:
        module.__dict__["_lumos_eval_warned"] = True
        warnings.warn("lumos.penalty is being trained with the gated model in eval mode: its gates "
                      "do not sample, and a budget's controller does not step. Call gated.train() "
                      "before the training loop (Hugging Face from_pretrained returns models in "
                      "eval mode, and compile keeps the mode it is given)", stacklevel=2)


def extract(gated: nn.Module, *, inputs: str = "full", round_to: int = 1,
            fill_budget: bool = False, check: bool = True):
    """The physically smaller model, exact against ``gated.eval()``.

    For a model compiled with ``budget=``, warns (``lumos_fx.budget.BudgetWarning``)
    when the result misses the budget by more than 2 points, naming the cause and fix.

    Args:
        inputs: ``"full"`` keeps the original input signature (dropped features
            are removed by an ``index_select``); ``"kept"`` takes only the kept
            features. Either way ``pruned.lumos_kept_inputs`` lists them.
        round_to: round every channel group's kept width up to a multiple of this
            (8 or 16 suit CPU/GPU kernels); the extra channels are the strongest
            closed ones and carry gate value 0, so the result stays exact.
        fill_budget: for a model compiled with ``budget=``: if training closed more
            than the budget asked, keep the strongest closed channels (gate value 0,
            so still exact) up to the budget, as capacity for a fine-tune.
        check: verify exactness on the example inputs (raises ExactnessError).
    """
    check_gates_finite(gated)
    if inputs not in ("full", "kept"):
        raise InputError(f"inputs must be 'full' or 'kept', got {inputs!r}")
    if not isinstance(round_to, int) or round_to < 1:
        raise InputError(f"round_to must be a positive int, got {round_to!r}")
    state = state_of(gated)
    fill_to = None
    if fill_budget:
        controller = getattr(unwrap(gated), "lumos_budget", None)
        if controller is None:
            raise InputError("fill_budget needs a model compiled with budget=...")
        fill_to = (controller.budget.metric, controller.budget.target)
    pruned = shrink(gated, inputs, round_to, fill_to)
    if check:
        dtype = next((p.dtype for p in gated.parameters() if p.is_floating_point()),
                     torch.float32)   # half precision rounds differently after slicing
        rtol = max(1e-4, 20 * torch.finfo(dtype).eps)
        verify(gated, pruned, model_inputs(gated, state.example_inputs), rtol=rtol)
    warn_if_off_budget(gated, pruned)    # budget mode: BudgetWarning when it missed by > 2 points
    return pruned
