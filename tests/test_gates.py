"""Hard-concrete gates: paper Eq. 1-5 and the semi-stochastic rule."""
import math

import torch

from lumos_fx.gates import GateConfig, HardConcreteGate


def test_default_gate_is_fully_open_in_eval():
    gate = HardConcreteGate(5).eval()
    assert torch.equal(gate(), torch.ones(5))


def test_eval_formula_matches_paper():
    gate = HardConcreteGate(4).eval()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, -0.5, 0.7, 3.0]))
    s = torch.sigmoid(gate.log_alpha.detach())
    expected = (s * 1.2 - 0.1).clamp(0, 1)
    torch.testing.assert_close(gate(), expected)
    assert gate()[0] == 0 and gate()[-1] == 1


def test_open_probability_formula():
    gate = HardConcreteGate(1)
    with torch.no_grad():
        gate.log_alpha.fill_(0.3)
    expected = 1 / (1 + math.exp(-(0.3 - (2 / 3) * math.log(0.1 / 1.1))))
    assert abs(float(gate.open_probability().detach()) - expected) < 1e-6


def test_training_samples_are_stochastic_in_range_and_differentiable():
    torch.manual_seed(0)
    gate = HardConcreteGate(1000).train()
    with torch.no_grad():
        gate.log_alpha.fill_(0.0)
    z = gate()
    assert ((z >= 0) & (z <= 1)).all()
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    z.sum().backward()
    assert gate.log_alpha.grad.abs().sum() > 0


def test_sample_mean_tracks_open_probability():
    torch.manual_seed(1)
    gate = HardConcreteGate(20000).train()
    with torch.no_grad():
        gate.log_alpha.fill_(-1.0)
    nonzero = (gate() > 0).float().mean()
    assert abs(float(nonzero) - float(gate.open_probability()[0].detach())) < 0.02


def test_semi_stochastic_thresholds_fix_saturated_gates():
    config = GateConfig(t_lower=0.2, t_upper=0.8)
    gate = HardConcreteGate(3, config).train()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-6.0, 0.0, 6.0]))
    for _ in range(20):
        z = gate()
        assert z[0] == 0 and z[2] == 1


def test_log_alpha_is_clamped():
    gate = HardConcreteGate(2, GateConfig(log_alpha_limit=3.0)).eval()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-100.0, 100.0]))
    assert torch.isfinite(gate.open_probability()).all()
    assert gate.open_probability()[1] < 1.0


def test_a_gate_past_the_clamp_still_gets_a_gradient():
    gate = HardConcreteGate(2, GateConfig(log_alpha_limit=3.0))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-9.0, 9.0]))
    gate.open_probability().sum().backward()
    assert (gate.log_alpha.grad != 0).all()
    assert gate.eval()().tolist() == [0.0, 1.0]
