"""``compile(..., feature_cost=c)``: a pressure on input features of its own."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.feature_cost import expected_feature_fraction


def _mlp(features: int = 6, hidden: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, 1))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.1", None])
def test_feature_cost_is_validated(bad):
    with pytest.raises(lumos.InputError, match="feature_cost"):
        lumos.compile(_mlp(), example_inputs=(torch.randn(4, 6),), feature_cost=bad)


def test_feature_cost_needs_a_gated_input():
    with pytest.raises(lumos.InputError, match="no input of this model is gated"):
        lumos.compile(_mlp(), example_inputs=(torch.randn(4, 6),), input_dims={"input": None},
                      feature_cost=0.1)


@pytest.mark.parametrize("budget", [None, 0.5])
def test_penalty_adds_the_cost_times_the_expected_kept_fraction(budget):
    x = (torch.randn(4, 6),)
    plain = lumos.compile(_mlp(), example_inputs=x, budget=budget)
    costly = lumos.compile(_mlp(), example_inputs=x, budget=budget, feature_cost=0.3)
    with torch.no_grad():
        lumos.gates(costly)["input"].log_alpha[:3] = -8.0
        lumos.gates(plain)["input"].log_alpha[:3] = -8.0
    fraction = expected_feature_fraction(costly)
    gate = lumos.gates(costly)["input"]
    assert math.isclose(float(fraction), float(gate.open_probability().mean()), rel_tol=1e-6)
    assert float(fraction) < 0.6
    costly.eval(), plain.eval()
    extra = lumos.penalty(costly) - lumos.penalty(plain)
    assert math.isclose(float(extra), 0.3 * float(fraction), rel_tol=1e-5)
    # the gradient reaches the input gates only through the feature term as well
    fraction.backward()
    assert gate.log_alpha.grad is not None and bool((gate.log_alpha.grad[3:] > 0).all())


def test_unused_inputs_close_under_a_feature_cost():
    """y depends on inputs 0 and 1; inputs 2-5 are noise. A budget alone puts almost no
    pressure on them (they cost 64 of 8.5k parameters each); a feature cost closes them."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2048, 6, generator=g)
    y = (torch.sin(2 * x[:, :1]) + x[:, 1:2] ** 2)
    gated = lumos.compile(_mlp(), example_inputs=(x[:8],), budget=0.6, feature_cost=0.2)
    opt = torch.optim.Adam(lumos.param_groups(gated, lr=3e-3))
    for step in range(600):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.mse_loss(gated(x[idx]), y[idx]) + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruned = lumos.extract(gated.eval())
    assert list(pruned.lumos_kept_inputs["input"]) == [0, 1]


def test_feature_cost_survives_a_checkpoint(tmp_path):
    gated = lumos.compile(_mlp(), example_inputs=(torch.randn(4, 6),), feature_cost=0.25)
    torch.save(gated, tmp_path / "g.pt")
    loaded = torch.load(tmp_path / "g.pt", weights_only=False)
    assert math.isclose(float(lumos.penalty(loaded.eval())), float(lumos.penalty(gated.eval())))
