"""The expected-cost model: its one-node forward/backward against numerical derivatives."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from tests.models.operators import ConvHead


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(),
                                  nn.Linear(6, 2)), (4, 5)),
    "flatten boundary": (ConvHead, (2, 2, 2, 2, 2)),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_evaluate_gradient_matches_finite_differences(name, batch):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    gated = lumos.compile(make(), example_inputs=(torch.randn(*shape),))
    cost = gated.lumos_cost
    slots = sum(g.size for g in lumos.gates(gated).values())
    assert name == "mlp" or len(cost._gathers) > 1
    q = torch.rand(*batch, slots, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: cost.evaluate(q), (q,))
    assert torch.autograd.gradcheck(lambda q: cost.evaluate(q)[0], (q,))
    params, flops = cost.evaluate(torch.ones(slots, dtype=torch.float64))
    assert params.item() == pytest.approx(cost.total_params)
    assert flops.item() == pytest.approx(cost.total_flops)


def test_only_one_output_used_still_differentiates():
    gated = lumos.compile(MODELS["mlp"][0](), example_inputs=(torch.randn(4, 5),))
    q = torch.rand(18, requires_grad=True)
    gated.lumos_cost.evaluate(q)[1].backward()
    assert q.grad is not None and (q.grad != 0).any()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("with_now", [False, True])
def test_gates_to_cost_in_one_node_matches_the_recorded_formula(name, with_now):
    """``expected`` / ``expected_and_deterministic`` compute the cost and its gradient in
    closed form and attach it to the gates in one recorded op; values and gradients equal
    the step-by-step formula (``evaluate`` of the open probabilities), saturated and
    clamped gates included."""
    make, shape = MODELS[name]
    torch.manual_seed(0)
    gated = lumos.compile(make(), example_inputs=(torch.randn(*shape),)).double()
    cost = gated.lumos_cost
    gates = lumos.gates(gated)
    with torch.no_grad():
        for gate in gates.values():
            gate.log_alpha.uniform_(-12.0, 12.0)           # beyond the +-8 clamp on both sides
    fused = cost.expected_and_deterministic(gated) if with_now else cost.expected(gated)
    weight = torch.tensor([0.7, -0.3] if with_now else 0.7, dtype=torch.float64)
    ((fused[0] * weight).sum() + 1e-3 * (fused[1] * weight).sum()).backward()
    grads = {k: g.log_alpha.grad.clone() for k, g in gates.items()}
    for gate in gates.values():
        gate.log_alpha.grad = None
    q = cost._open_probability(gated, None)
    if with_now:
        with torch.no_grad():
            now = cost.slots({k: (g.deterministic() > 0).double()
                              for k, g in gated.lumos_gates.items()})
        q = torch.stack([q, now])
    reference = cost.evaluate(q)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b)
    ((reference[0] * weight).sum() + 1e-3 * (reference[1] * weight).sum()).backward()
    for key, gate in gates.items():
        torch.testing.assert_close(grads[key], gate.log_alpha.grad)
        assert grads[key].abs().max() > 0
