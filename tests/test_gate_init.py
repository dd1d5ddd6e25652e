"""``lumos.init_gates_from_magnitude``: gates start ranked by the trained weights, the
gated model stays exact, and bad spreads are refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.gate_init import channel_importance


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_the_gated_model_stays_exact_in_eval_and_the_order_follows_the_weights():
    model = _cnn()
    strength = torch.tensor([0.05, 3.0, 1.0, 0.5, 2.0, 0.2])
    with torch.no_grad():            # every parameter slice of a channel scaled alike
        model[0].weight.mul_(strength[:, None, None, None])
        model[0].bias.mul_(strength)
        model[1].weight.copy_(strength)
        model[1].bias.copy_(strength)
        model[3].weight.mul_(strength[None, :, None, None])
    x = torch.randn(4, 3, 8, 8)
    gated = lumos.compile(model, example_inputs=(x,))
    lumos.init_gates_from_magnitude(gated, spread=3.0)
    gate = lumos.gates(gated)["0"]
    order = torch.argsort(gate.log_alpha.detach())
    assert order.tolist() == torch.argsort(strength).tolist()
    assert gate.log_alpha.min().item() == pytest.approx(2.5)
    assert gate.log_alpha.max().item() == pytest.approx(5.5)
    torch.testing.assert_close(gated.eval()(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(lumos.extract(gated)(x), model(x), rtol=1e-5, atol=1e-6)


def test_every_gate_gets_an_importance_per_channel_inputs_included():
    gated = lumos.compile(_cnn(), example_inputs=(torch.randn(2, 3, 8, 8),))
    importance = channel_importance(gated)
    assert set(importance) == set(lumos.gates(gated))
    for key, values in importance.items():
        assert values.shape == (lumos.gates(gated)[key].size,)
        assert torch.isfinite(values).all() and (values > 0).all()


@pytest.mark.parametrize("spread, message", [(0, "positive"), (-1.0, "positive"),
                                             (float("nan"), "positive"), (True, "positive"),
                                             (6.0, "above its limit")])
def test_bad_spreads_are_refused(spread, message):
    gated = lumos.compile(_cnn(), example_inputs=(torch.randn(2, 3, 8, 8),))
    with pytest.raises(lumos.InputError, match=message):
        lumos.init_gates_from_magnitude(gated, spread=spread)


def test_a_budget_closes_the_weak_channels_first():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    strength = torch.linspace(0.05, 2.0, 16)
    with torch.no_grad():
        model[0].weight.mul_(strength[:, None])
        model[2].weight.mul_(strength[None, :])
    x = torch.randn(256, 8)
    y = model(x).detach()
    gated = lumos.compile(model, example_inputs=(x,), budget=0.5, input_dims={"input": None})
    lumos.init_gates_from_magnitude(gated)
    opt = torch.optim.Adam(lumos.param_groups(gated, lr=1e-3, gate_lr=0.1))
    for _ in range(300):
        loss = (gated(x) - y).pow(2).mean() + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    kept = lumos.gates(gated)["0"].eval()() > 0
    assert 0 < kept.sum() < 16
    # what stayed open is the strong end
    assert kept[-int(kept.sum()):].all()
