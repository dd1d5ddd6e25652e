"""The fused sampler of all gates must match the per-gate formula and its gradient."""
import torch

from lumos_fx.gate_bank import GateBank
from lumos_fx.gates import GateConfig, HardConcreteGate


def _reference(log_alpha: torch.Tensor, u: torch.Tensor, c: GateConfig) -> torch.Tensor:
    """Paper Eq. 1-4 written out with autograd."""
    la = log_alpha.clamp(-c.log_alpha_limit, c.log_alpha_limit)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / c.beta)
    z = (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)
    q = torch.sigmoid(la - c.beta * torch.log(torch.tensor(-c.gamma / c.zeta))).detach()
    z = torch.where(q > c.t_upper, torch.ones_like(z), z)
    return torch.where(q < c.t_lower, torch.zeros_like(z), z)


def _bank():
    bank = GateBank({"a": HardConcreteGate(5), "b": HardConcreteGate(7)})
    with torch.no_grad():   # free, saturated-open, saturated-closed and clamped gates
        bank["a"].log_alpha.copy_(torch.tensor([0.3, -1.0, 9.0, -9.0, 1.5]))
        bank["b"].log_alpha.copy_(torch.linspace(-4.0, 7.0, 7))
    return bank.train()


def test_fused_sample_and_gradient_match_the_paper_formula():
    bank = _bank()
    weights = torch.randn(12)
    torch.manual_seed(0)
    z = torch.cat(bank())
    (z * weights).sum().backward()
    fused = [bank[k].log_alpha.grad.clone() for k in ("a", "b")]

    torch.manual_seed(0)
    log_alpha = torch.cat([bank[k].log_alpha for k in ("a", "b")]).detach().requires_grad_()
    u = torch.rand_like(log_alpha)
    expected = _reference(log_alpha, u, GateConfig())
    (expected * weights).sum().backward()
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(torch.cat(fused), log_alpha.grad)
    assert (log_alpha.grad != 0).any()


def test_eval_bank_is_each_gates_deterministic_value():
    bank = _bank().eval()
    for z, gate in zip(bank(), bank.values()):
        torch.testing.assert_close(z, gate.deterministic())


def test_fused_sample_follows_a_custom_clamp_like_a_single_gate():
    config = GateConfig(log_alpha_limit=1.0)   # inside the frozen region: clamp before Eq. 1
    bank = GateBank({"a": HardConcreteGate(8, config), "b": HardConcreteGate(8, config)}).train()
    with torch.no_grad():
        bank["a"].log_alpha.fill_(-100.0)
        bank["b"].log_alpha.fill_(100.0)
    torch.manual_seed(1)
    fused = torch.cat(bank())
    torch.manual_seed(1)
    u = torch.rand(16)
    expected = _reference(torch.cat([bank["a"].log_alpha, bank["b"].log_alpha]).detach(), u, config)
    torch.testing.assert_close(fused.detach(), expected)
    assert 0 < int((fused > 0).sum()) < 16
