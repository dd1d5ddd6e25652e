"""The fused sampler of all gates must match the per-gate formula and its gradient."""
import pytest
import torch
from torch import nn

import lumos_fx as lumos

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


def _gated(name="mlp"):
    import lumos_fx as lumos
    from tests.models.operators import ConvHead
    torch.manual_seed(0)
    if name == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        x = torch.randn(4, 6)
    else:                                     # flattened positions: the general cost formula
        model, x = ConvHead(), torch.randn(4, 2, 2, 2, 2)
    gated = lumos.compile(model, example_inputs=(x,)).train()
    assert (gated.lumos_cost.quadratic is None) == (name != "mlp")
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.uniform_(-10.0, 10.0)      # free, frozen and clamped gates
    return gated, x


def _gate_grads(gated):
    import lumos_fx as lumos
    grads = [g.log_alpha.grad.clone() for g in lumos.gates(gated).values()]
    gated.zero_grad(set_to_none=True)
    return grads


def _links(gated):
    bank = gated.lumos_gates
    return bank, [bank[key].log_alpha for key in gated.lumos_cost._order]


@pytest.mark.parametrize("name", ["mlp", "flatten"])
def test_penalty_attaches_its_gradient_to_the_forwards_link(name):
    """After a training forward the penalty attaches its closed-form gradient to the
    forward's recorded gates (no recorded gate ops of its own); value and gradient equal
    the penalty computed with a link of its own, for the plain penalty and the budget's
    two-row cost, and the step-by-step formula's."""
    import lumos_fx as lumos
    gated, x = _gated(name)
    bank, log_alphas = _links(gated)
    cost = gated.lumos_cost
    uses = [cost.expected, cost.expected_and_deterministic,
            lambda gated: (lumos.penalty(gated), torch.zeros(()))]
    for use in uses:
        gated(x)
        assert bank.link(log_alphas) is bank.__dict__["_last_link"].tensor
        reused = use(gated)
        (reused[0].sum() + 1e-2 * reused[1].sum()).backward()
        via_forward = _gate_grads(gated)
        bank.__dict__.pop("_last_link")
        own = use(gated)
        (own[0].sum() + 1e-2 * own[1].sum()).backward()
        for a, b in zip(reused, own):
            torch.testing.assert_close(a, b)
        for a, b in zip(via_forward, _gate_grads(gated)):
            torch.testing.assert_close(a, b)
        assert any((g != 0).any() for g in via_forward)
    recorded = cost.evaluate(cost._open_probability(gated, None))   # autograd end to end
    (recorded[0] + 1e-2 * recorded[1]).backward()
    reference = _gate_grads(gated)
    closed = cost.expected(gated)
    (closed[0] + 1e-2 * closed[1]).backward()
    for a, b in zip(reference, _gate_grads(gated)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("fused", [True, False])
def test_the_penalty_follows_the_gates_after_any_optimizer_step(fused):
    """A fused Adam step changes log_alpha without bumping its version counter: the
    penalty after it must still see the new gates (its values are never cached)."""
    import lumos_fx as lumos
    gated, x = _gated()
    opt = torch.optim.Adam(gated.lumos_gates.parameters(), lr=0.5, fused=fused)
    gated(x).sum().backward()
    opt.step()
    after_step = lumos.penalty(gated)
    gated.lumos_gates.__dict__.pop("_last_link")
    torch.testing.assert_close(after_step, lumos.penalty(gated))


def test_the_link_is_reused_only_for_the_same_parameters():
    import lumos_fx as lumos
    gated, x = _gated()
    bank, log_alphas = _links(gated)
    gated(x)
    last = bank.__dict__["_last_link"].tensor
    assert bank.link(log_alphas) is last
    assert bank.link(log_alphas[::-1]) is not last                      # another order
    with torch.no_grad():
        assert bank.link(log_alphas) is None                            # no gradients
    gate = next(iter(bank.values()))
    gate.log_alpha = torch.nn.Parameter(gate.log_alpha.detach().clone())  # replaced
    assert bank.link(_links(gated)[1]) is not last
    gated(x).sum().backward()                  # separate backwards of loss and penalty,
    lumos.penalty(gated).backward()            # and the penalty again: the link saves
    lumos.penalty(gated).backward()            # nothing a later backward needs


def test_a_model_with_a_pending_link_copies_pickles_and_frees_it():
    import copy
    import gc
    import pickle
    import weakref
    gated, x = _gated()
    gated(x)
    copied = copy.deepcopy(gated)
    assert "_last_link" not in copied.lumos_gates.__dict__
    assert "_last_link" not in pickle.loads(pickle.dumps(gated)).lumos_gates.__dict__
    torch.testing.assert_close(copied.eval()(x), gated.eval()(x))
    gated.train()
    gc.disable()
    try:                      # the link must not sit in a reference cycle with its graph
        gated(x)
        old = weakref.ref(gated.lumos_gates.__dict__["_last_link"].tensor)
        gated(x)
        assert old() is None
    finally:
        gc.enable()


def test_a_float64_model_gets_float64_gates_and_an_exact_penalty_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1)).double()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 3, dtype=torch.float64),))
    gate = lumos.gates(gated)["0"]
    assert gate.log_alpha.dtype == torch.float64
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-2.0, 2.0, 6, dtype=torch.float64))
    lumos.penalty(gated).backward()
    analytic = gate.log_alpha.grad[2].item()
    step = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            gate.log_alpha[2] += sign * step
            values.append(lumos.penalty(gated).item())
            gate.log_alpha[2] -= sign * step
    assert abs((values[0] - values[1]) / (2 * step) - analytic) < 1e-7 * max(1.0, abs(analytic))
