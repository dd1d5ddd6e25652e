"""Budget mode: the Lagrangian controller drives the extracted model to a target size."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from lumos_fx import gate_step
from lumos_fx.budget import Budget, BudgetController, BudgetWarning


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 2))


def _data(n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], x[:, 3] ** 2 - x[:, 4] + x[:, 5]], 1)
    return x, (y - y.mean(0)) / y.std(0)


def _train(gated, steps, batch=64, seed=0, opt=None):
    x, y = _data()
    opt = opt or torch.optim.Adam(lumos.param_groups(gated, lr=2e-3))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = F.mse_loss(gated(x[idx]), y[idx]) + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gated


# ----------------------------------------------------------------- the spec
def test_budget_spec_validation():
    assert lumos.Budget(params=0.2).metric == "params"
    assert lumos.Budget(flops=0.25).target == 0.25
    for bad in [dict(), dict(params=0.2, flops=0.3), dict(params=0.0), dict(flops=1.5),
                dict(params=0.5, warmup=-1), dict(params=0.5, lr=0.0), dict(params=True),
                dict(params=float("nan")), dict(params=0.5, lr=float("inf")),
                dict(params=0.5, gate_lr=0.0), dict(params=0.5, gate_lr="fast"),
                dict(params=0.5, warmup="long"), dict(params=0.5, warmup=1.5, steps=100)]:
        with pytest.raises(lumos.InputError):
            lumos.Budget(**bad)
    with pytest.raises(lumos.InputError, match="budget must be"):
        lumos.compile(_mlp(), (torch.randn(2, 16),), budget="20%")


@pytest.mark.parametrize("bad, message", [
    (dict(steps=0), "positive int"), (dict(steps=2.5), "positive int"),
    (dict(steps=True), "positive int"), (dict(steps=100, warmup=200), "longer than the planned"),
    (dict(warmup=0.3), "also give the run's length"), (dict(steps=100, warmup=1.0), r"\(0, 1\)")])
def test_budget_steps_validation(bad, message):
    with pytest.raises(lumos.InputError, match=message):
        lumos.Budget(params=0.2, **bad)


def test_warmup_scales_with_the_planned_run():
    assert Budget(params=0.2).warmup_steps == 500
    assert Budget(params=0.2, warmup=1000).warmup_steps == 1000      # warmup= keeps working
    assert Budget(params=0.2, steps=3000).warmup_steps == 1200
    assert Budget(params=0.2, steps=300, warmup=0.5).warmup_steps == 150
    assert Budget(params=0.2, steps=300, warmup=100).warmup_steps == 100
    c = BudgetController(Budget(params=0.2, steps=200))
    assert c.target(40) == pytest.approx(0.6) and c.target(80) == pytest.approx(0.2)


def test_float_budget_means_params_and_controller_is_a_submodule():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=0.2)
    assert isinstance(gated.lumos_budget, BudgetController)
    assert gated.lumos_budget.budget == Budget(params=0.2)
    keys = set(gated.state_dict())
    assert {"lumos_budget.state", "lumos_budget.step"} <= keys
    assert not any(n.startswith("lumos_budget") for n, _ in gated.named_parameters())


def test_controller_state_moves_with_to():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=0.3).to(torch.float64)
    lumos.penalty(gated).backward()
    assert gated.lumos_budget.state.dtype == torch.float64
    assert gated.lumos_budget.step.dtype == torch.long


def test_no_budget_keeps_fixed_lambda_penalty():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), lam=0.5)
    assert not hasattr(gated, "lumos_budget")
    params, _ = lumos.expected_cost(gated)
    assert torch.allclose(lumos.penalty(gated), 0.5 * params / gated.lumos_cost.total_params)
    with pytest.raises(lumos.InputError, match="without a budget"):
        lumos.budget_status(gated)


def test_one_pass_cost_matches_the_gate_formulas():
    """The controller's fused pass (expected and extracted cost at once) agrees with the
    per-gate ``open_probability`` / ``deterministic`` of every gate."""
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=0.2)
    cost = gated.lumos_cost
    torch.manual_seed(0)
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.uniform_(-9.0, 9.0)
    (ep, dp), (ef, df) = cost.expected_and_deterministic(gated)
    # the cost module is keyed by the gates' state_dict keys (gated.lumos_gates)
    per_gate = cost({k: g.open_probability() for k, g in gated.lumos_gates.items()})
    torch.testing.assert_close((ep, ef), per_gate)
    torch.testing.assert_close((ep, ef), cost.expected(gated))
    assert (dp.item(), df.item()) == tuple(v.item() for v in cost.deterministic(gated))
    pruned = lumos.extract(gated)
    assert int(dp) == sum(p.numel() for p in pruned.parameters())


# ------------------------------------------------------------ the controller
def test_target_ramps_linearly_over_warmup():
    c = BudgetController(Budget(params=0.2, warmup=100))
    assert c.target(0) == 1.0
    assert c.target(50) == pytest.approx(0.6)
    assert c.target(100) == pytest.approx(0.2) == c.target(10_000)
    assert BudgetController(Budget(params=0.2, warmup=0)).target(0) == pytest.approx(0.2)


def test_only_training_mode_calls_with_grad_step_the_controller():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=Budget(params=0.2, warmup=10))
    before = gated.lumos_budget.state.clone()
    with torch.no_grad():
        lumos.penalty(gated)
    gated.eval()
    lumos.penalty(gated)
    assert int(gated.lumos_budget.step) == 0 and torch.equal(gated.lumos_budget.state, before)
    gated.train()
    lumos.penalty(gated)
    assert int(gated.lumos_budget.step) == 1


def test_multipliers_ascend_and_penalty_pushes_gates_closed_when_over_target():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=Budget(params=0.2, warmup=0))
    for _ in range(5):
        gated.zero_grad()
        lumos.penalty(gated).backward()
    l1, l2 = gated.lumos_budget.multipliers.tolist()
    assert l1 > 0 and l2 > 0
    for gate in lumos.gates(gated).values():
        assert (gate.log_alpha.grad > 0).all()    # descent lowers log_alpha: gates close


def test_multiplier_pulls_gates_open_when_under_target():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=Budget(params=0.8, warmup=0))
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.fill_(-1.0)
    for _ in range(5):
        gated.zero_grad()
        lumos.penalty(gated).backward()
    assert gated.lumos_budget.multipliers[0] < 0
    for gate in lumos.gates(gated).values():
        assert (gate.log_alpha.grad < 0).all()


def test_penalty_works_through_wrappers_and_status_reports():
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=0.5)

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    wrapped = Wrapper(gated)
    lumos.penalty(wrapped).backward()
    status = lumos.budget_status(wrapped)
    assert status.steps == 1 and status.achieved == 1.0 and status.target == 0.5
    assert "target 50.0%" in str(status)


def test_budget_penalty_inside_torch_compile_steps_the_controller_eagerly():
    """The controller reads host floats from the gates: under torch.compile it runs as
    eager code (it crashed fake-tensor tracing before) and takes the same steps."""
    gated = lumos.compile(_mlp(), (torch.randn(2, 16),), budget=Budget(params=0.2, warmup=50))
    twin = copy.deepcopy(gated)
    x = torch.randn(8, 16)
    compiled_loss = torch.compile(lambda: gated(x).square().mean() + lumos.penalty(gated),
                                  backend="aot_eager")
    for _ in range(4):      # the step count changes: dynamo makes it a symbolic int
        compiled_loss().backward()
        lumos.penalty(twin).backward()
    assert int(gated.lumos_budget.step) == int(twin.lumos_budget.step) == 4
    torch.testing.assert_close(gated.lumos_budget.state, twin.lumos_budget.state)


# --------------------------------------------------------------- done-when
@pytest.mark.parametrize("budget", [0.2, lumos.Budget(flops=0.25)], ids=["params0.2", "flops0.25"])
def test_extraction_lands_within_two_points_of_budget(budget):
    """Default controller settings (warm-up 1000 steps), 1500 steps; the same check on the
    full-size MLP and CNN is ``python -m benchmarks.budget_accuracy``."""
    x, _ = _data()
    gated = lumos.compile(_mlp(), (x[:64],), budget=budget)
    _train(gated, steps=1500)
    pruned = lumos.extract(gated)                        # checks exactness too
    status = lumos.budget_status(gated, pruned)
    assert abs(status.error) <= 0.02, str(status)


def test_fill_budget_gives_back_closed_channels_up_to_the_target():
    model = _mlp()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 16),), budget=0.5)
    with torch.no_grad():
        for key, gate in lumos.gates(gated).items():
            if key != "input":
                gate.log_alpha.copy_(torch.linspace(-6.0, 6.0, gate.size)[torch.randperm(gate.size)])
                gate.log_alpha[: gate.size * 3 // 4] = -6.0
    plain = lumos.extract(gated)
    filled = lumos.extract(gated, fill_budget=True)
    total = sum(p.numel() for p in model.parameters())
    plain_fraction = sum(p.numel() for p in plain.parameters()) / total
    filled_fraction = sum(p.numel() for p in filled.parameters()) / total
    assert plain_fraction < 0.3
    assert 0.45 <= filled_fraction <= 0.5
    assert lumos.verify(gated, filled, (torch.randn(7, 16),)) < 1e-6
    with pytest.raises(lumos.InputError, match="fill_budget"):
        lumos.extract(lumos.compile(model, example_inputs=(torch.randn(4, 16),)), fill_budget=True)


def test_fill_budget_also_reopens_flattened_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 2, 6, 6),), budget=0.5)
    positions = [k for k in lumos.gates(gated) if k not in ("input", "0", "3")]
    with torch.no_grad():
        for key in positions:
            gate = lumos.gates(gated)[key]
            gate.log_alpha[: gate.size * 9 // 10] = -8.0
    narrow = lumos.extract(gated).get_submodule("3").weight.shape[1]
    filled = lumos.extract(gated, fill_budget=True)
    total = sum(p.numel() for p in model.parameters())
    assert filled.get_submodule("3").weight.shape[1] > narrow
    assert 0.45 <= sum(p.numel() for p in filled.parameters()) / total <= 0.5
    assert lumos.verify(gated, filled, (torch.randn(3, 2, 6, 6),)) < 1e-6


# ------------------------------------------- the simplest loop, short runs
@pytest.mark.parametrize("lr", [1e-3, 3e-3])
def test_plain_adam_over_all_parameters_lands(lr):
    """Gates in the weights' group at a weight-sized lr still travel: their step is
    rescaled to the budget's gate_lr (a plain Adam step is ~lr, 5 units need ~5,000).
    Runs shorter than this land a few points under the target (the controller overshoots)."""
    x, _ = _data()
    gated = lumos.compile(_mlp(), (x[:64],), budget=Budget(params=0.3, steps=600))
    _train(gated, 600, opt=torch.optim.Adam(gated.parameters(), lr=lr))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)      # landed: extract stays quiet
        pruned = lumos.extract(gated)
    assert abs(lumos.budget_status(gated, pruned).error) <= 0.02


def test_without_gate_lr_plain_adam_gates_barely_move():
    x, _ = _data()
    gated = lumos.compile(_mlp(), (x[:64],), budget=Budget(params=0.3, steps=200, gate_lr=None))
    _train(gated, 200, opt=torch.optim.Adam(gated.parameters(), lr=1e-3))
    moved = max(float((g.log_alpha - 2.5).abs().max()) for g in lumos.gates(gated).values())
    assert moved <= 0.5          # Adam's step is about lr; closing needs about 5 units


def test_gate_step_leaves_own_groups_and_untracked_params_alone():
    weight, gate, other = (nn.Parameter(torch.ones(2)) for _ in range(3))
    gate_step.track([gate, other], gate_lr=0.5)
    opt = torch.optim.SGD([{"params": [weight, gate]}, {"params": [other], "lr": 0.1}], lr=0.01)
    (weight.sum() + gate.sum() + other.sum()).backward()
    opt.step()
    assert weight.tolist() == pytest.approx([0.99] * 2)          # the group's rate
    assert gate.tolist() == pytest.approx([0.5] * 2)             # rescaled to gate_lr
    assert other.tolist() == pytest.approx([0.9] * 2)            # a gates-only group: as built
    gate_step.untrack([gate, other])
    assert gate_step.rate(gate) is None


def test_too_short_run_warns_and_sufficient_run_does_not():
    x, _ = _data()
    short = lumos.compile(_mlp(), (x[:64],), budget=0.2)         # default warm-up: 500 steps
    _train(short, 100, opt=torch.optim.Adam(short.parameters(), lr=1e-3))
    with pytest.warns(BudgetWarning, match=r"keeps .* target 20.0%.* after 100 steps, inside "
                                           r"the 500-step warm-up.*steps=100"):
        lumos.extract(short)
    with pytest.warns(BudgetWarning, match="inside the 500-step warm-up"):
        lumos.budget_status(short)
    planned = lumos.compile(_mlp(), (x[:64],), budget=Budget(params=0.2, steps=600))
    _train(planned, 600, opt=torch.optim.Adam(planned.parameters(), lr=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        status = lumos.budget_status(planned, lumos.extract(planned))
    assert abs(status.error) <= 0.02, str(status)


def test_untrained_model_warns_that_the_controller_never_stepped():
    gated = lumos.compile(_mlp(), (torch.randn(4, 16),), budget=Budget(flops=0.5))
    with pytest.warns(BudgetWarning, match="never stepped"):
        lumos.extract(gated, inputs="kept")


def test_fill_budget_skips_a_channel_too_expensive_for_the_room():
    """The strongest closed channel (a conv channel read by a wide flattened layer) does
    not fit what is left of the budget; cheaper hidden neurons after it still get in."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 1))
    total = sum(p.numel() for p in model.parameters())
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 2, 8, 8),), budget=0.2)
    gates = lumos.gates(gated)
    with torch.no_grad():
        gates["0"].log_alpha[:] = torch.tensor([6.0, -3.0, -6.0, -6.0])    # channel 1: strongest closed
        gates["3"].log_alpha[:] = -5.0
        gates["3"].log_alpha[:16] = 6.0
    plain = lumos.extract(gated)
    plain_fraction = sum(p.numel() for p in plain.parameters()) / total
    conv_channel = 64 * 16 + 9 * 2 + 1      # what reopening one more conv channel costs
    assert plain_fraction + conv_channel / total > 0.2 > plain_fraction + 0.05
    filled = lumos.extract(gated, fill_budget=True)
    fraction = sum(p.numel() for p in filled.parameters()) / total
    assert filled.get_submodule("0").weight.shape[0] == 1          # the conv channel did not fit
    assert filled.get_submodule("3").weight.shape[0] > 16         # the hidden neurons did
    assert 0.19 <= fraction <= 0.2
    assert lumos.verify(gated, filled, (torch.randn(3, 2, 8, 8),)) < 1e-6


def test_fill_budget_keeps_a_fully_closed_model_trainable():
    """Every hidden gate closed: without fill the model is a constant; with fill_budget the
    capacity kept back stays as layers (gate value 0 folded in: still exact, still the
    constant) instead of being folded away, and a fine-tune learns the task with it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    x = torch.randn(256, 8)
    y = x.sum(dim=1, keepdim=True)
    gated = lumos.compile(model, example_inputs=(x[:4],), budget=0.3)
    with torch.no_grad():
        for key, gate in lumos.gates(gated).items():
            if key != "input":
                gate.log_alpha.uniform_(-8.0, -4.0)
    with pytest.warns(UserWarning, match="constant"):
        assert sum(p.numel() for p in lumos.extract(gated).parameters()) <= 1
    with pytest.warns(UserWarning, match="no signal until a fine-tune"):
        filled = lumos.extract(gated, fill_budget=True)
    total = sum(p.numel() for p in model.parameters())
    assert 0.25 <= sum(p.numel() for p in filled.parameters()) / total <= 0.3
    assert lumos.verify(gated, filled, (x[:16],)) < 1e-6
    constant_loss = float(F.mse_loss(filled(x), y))
    opt = torch.optim.Adam(filled.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.mse_loss(filled(x), y).backward()
        opt.step()
    assert float(F.mse_loss(filled(x), y)) < 0.2 * constant_loss


def test_fill_budget_capacity_behind_a_closed_layer_is_not_dropped():
    """Fill reopens strong channels of the first hidden layer while every channel of the
    second stays closed: removing the second layer as a constant would drop the first
    layer's kept capacity with it, so the model would miss the budget fill aimed at."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 8),), budget=0.075)
    gates = lumos.gates(gated)
    with torch.no_grad():
        gates["0"].log_alpha.uniform_(-3.0, -2.0)          # closed, first to come back
        gates["2"].log_alpha.fill_(-8.0)                   # closed, last to come back
        gates["4"].log_alpha.fill_(-8.0)
        gates["4"].log_alpha[:8] = 6.0
    filled = lumos.extract(gated, fill_budget=True)
    total = sum(p.numel() for p in model.parameters())
    assert filled.get_submodule("0").weight.shape[0] > 8
    assert filled.get_submodule("2").weight.shape[0] == 1            # no room for these
    assert 0.055 <= sum(p.numel() for p in filled.parameters()) / total <= 0.075
    assert lumos.verify(gated, filled, (torch.randn(5, 8),)) < 1e-6
