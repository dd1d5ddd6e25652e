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
