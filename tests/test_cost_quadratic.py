"""The quadratic-form cost must equal the general product formula, value and gradient."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.cost import _Evaluate
from lumos_fx.cost_quadratic import QuadraticCost
from tests.models.architectures import ARCHITECTURES
from tests.models.operators import ConvHead
from tests.models.zoo import ZOO

MODELS = {name: (make_model, make_input) for name, make_model, make_input in ZOO}
MODELS.update({f"arch {name}": entry for name, entry in ARCHITECTURES.items()})
QUADRATIC = ["mlp", "mlp_input_residual", "resnet", "densenet", "arch unet", "arch mobilenet_v3",
             "arch inception", "arch shufflenet", "arch densenet_growth", "arch residual_branch"]


def _cost(name, max_dense=None, monkeypatch=None):
    if max_dense is not None:
        monkeypatch.setattr("lumos_fx.cost_quadratic.MAX_DENSE", max_dense)
    make_model, make_input = MODELS[name]
    torch.manual_seed(0)
    gated = lumos.compile(make_model().double(), example_inputs=(make_input(2).double(),))
    return gated.lumos_cost, sum(g.size for g in lumos.gates(gated).values())


@pytest.mark.parametrize("name", QUADRATIC)
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
@pytest.mark.parametrize("dense", [True, False])
def test_quadratic_form_equals_the_product_formula(name, batch, dense, monkeypatch):
    cost, slots = _cost(name, None if dense else 0, monkeypatch)
    assert cost.quadratic is not None and cost.quadratic.dense == dense
    q = torch.rand(*batch, slots, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(2, *batch, dtype=torch.float64)
    grads = []
    for evaluate in (cost.quadratic, lambda q: _Evaluate.apply(cost, q)):
        params, flops = evaluate(q)
        if evaluate is not cost.quadratic:
            params = params + cost.constant_params
        assert params.shape == flops.shape == batch
        ((params * weight[0]).sum() + 1e-3 * (flops * weight[1]).sum()).backward()
        grads.append((params.detach(), flops.detach(), q.grad.clone()))
        q.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert grads[0][2].abs().max() > 0


def test_quadratic_form_passes_gradcheck():
    cost, slots = _cost("mlp")
    q = torch.rand(slots, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: cost.quadratic(q), (q,))


def test_a_position_that_needs_two_gates_keeps_the_general_formula():
    """A flattened column survives only if its channel and its position stay: a product
    of two probabilities, which no quadratic form in the dims' kept sizes expresses."""
    gated = lumos.compile(ConvHead(), example_inputs=(torch.randn(2, 2, 2, 2, 2),))
    assert gated.lumos_cost.quadratic is None


def test_a_term_over_three_dims_is_no_quadratic_form():
    assert QuadraticCost.build([[0], [1], [2]], [0.0] * 3, [[0, 1, 2]], [(1.0, 1.0)]) is None
    form = QuadraticCost.build([[0], [1]], [0.0, 0.0], [[0, 1], [0], []], [(2.0, 0.0)] * 3,
                               constant=5.0)
    params, _ = form(torch.tensor([0.5, 0.25]))
    assert params.item() == pytest.approx(2 * 0.5 * 0.25 + 2 * 0.5 + 2 + 5)


def test_dims_with_the_same_positions_are_merged():
    """A layer's weight rows and its bias share one kept size: one dim of the form."""
    form = QuadraticCost.build([[0, 1], [0, 1], [2]], [0.0, 0.0, 1.0], [[0, 2], [1]],
                               [(1.0, 0.0), (1.0, 0.0)])
    assert form.form.shape == (2, 3, 3)
    params, _ = form(torch.tensor([1.0, 0.5, 0.0]))
    assert params.item() == pytest.approx(1.5 * 1.0 + 1.5)


def _python_backward_nodes(tensor: torch.Tensor) -> list[str]:
    """The autograd.Function nodes (backward written in Python) behind ``tensor``."""
    seen, stack, found = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "_forward_cls"):
            found.append(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return found


@pytest.mark.parametrize("budget", [None, 0.5])
def test_the_penalty_has_no_python_backward(budget):
    """Its backward runs in the autograd engine alone, for the quadratic and the general
    formula, with and without a training forward before it."""
    for model, x in [(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), (2, 4)),
                     (ConvHead(), (2, 2, 2, 2, 2))]:
        gated = lumos.compile(model, example_inputs=(torch.randn(*x),), budget=budget)
        assert _python_backward_nodes(lumos.penalty(gated)) == []
        gated.train()(torch.randn(*x))
        assert _python_backward_nodes(lumos.penalty(gated)) == []
