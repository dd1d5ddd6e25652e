"""Training helpers: optimizer groups, the ``fit`` loop, semi-stochastic freezing, and
fine-tuning the extracted model."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from lumos_fx.training import DEFAULT_GATE_LR, fit, kept_fraction


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))


X = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
Y = X[:, :1] - 2 * X[:, 1:2]


def _batches(batch=32):
    return [(X[i:i + batch], Y[i:i + batch]) for i in range(0, len(X), batch)]


def test_param_groups_split_weights_and_gates():
    gated = lumos.compile(_model(), (X[:2],), budget=0.5)
    groups = lumos.param_groups(gated, lr=1e-3, weight_decay=0.1)
    weights, gates = groups
    assert weights["lr"] == 1e-3 and weights["weight_decay"] == 0.1
    assert gates["lr"] == DEFAULT_GATE_LR and gates["weight_decay"] == 0.0
    gate_ids = {id(g.log_alpha) for g in lumos.gates(gated).values()}
    assert {id(p) for p in gates["params"]} == gate_ids
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in gated.parameters())   # each exactly once
    torch.optim.AdamW(groups)


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD,
                                       torch.optim.RMSprop, torch.optim.Adagrad])
def test_gate_group_steps_all_gates_at_once_like_one_step_each(optimizer):
    """The gate group's fused or multi-tensor (``foreach``) step gives the per-parameter
    step's gates."""
    torch.manual_seed(0)
    gated = lumos.compile(_model(), (X[:2],))
    twin = copy.deepcopy(gated)
    groups = lumos.param_groups(gated, lr=1e-2)
    assert groups[1]["foreach"] is True and groups[1]["fused"] is True
    twin_groups = lumos.param_groups(twin, lr=1e-2)
    twin_groups[1]["foreach"] = twin_groups[1]["fused"] = False
    opts = [optimizer(groups, lr=1e-2), optimizer(twin_groups, lr=1e-2)]
    for x, y in _batches():
        for model, opt in zip((gated, twin), opts):
            torch.manual_seed(1)                         # the same gate samples for both
            opt.zero_grad()
            (F.mse_loss(model(x), y) + lumos.penalty(model)).backward()
            opt.step()
    for key, gate in lumos.gates(gated).items():
        assert not torch.equal(gate.log_alpha, torch.full_like(gate.log_alpha, 2.5))
        torch.testing.assert_close(gate.log_alpha, lumos.gates(twin)[key].log_alpha)


def test_param_groups_unwrap_wrappers():
    gated = lumos.compile(_model(), (X[:2],))

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert len(lumos.param_groups(Wrapper(gated))[1]["params"]) == len(lumos.gates(gated))


def test_plain_parameters_optimizer_trains_with_budget():
    """``Adam(gated.parameters())`` works: the controller has no parameters to optimize."""
    gated = lumos.compile(_model(), (X[:2],), budget=lumos.Budget(params=0.5, warmup=5))
    opt = torch.optim.Adam(gated.parameters(), lr=1e-2)
    before = {k: g.log_alpha.detach().clone() for k, g in lumos.gates(gated).items()}
    with pytest.warns(UserWarning, match="param_groups"):      # gates lag at lr 1e-2
        for x, y in _batches():
            loss = F.mse_loss(gated(x), y) + lumos.penalty(gated)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert int(gated.lumos_budget.step) == len(_batches())
    assert any(not torch.equal(before[k], g.log_alpha) for k, g in lumos.gates(gated).items())


def test_fit_runs_and_reports(capsys):
    gated = lumos.compile(_model(), (X[:2],), budget=lumos.Budget(params=0.9, warmup=10))
    history = fit(gated, _batches(), F.mse_loss, epochs=2, progress=True)
    assert len(history["loss"]) == 2 * len(_batches()) == int(gated.lumos_budget.step)
    assert all(torch.isfinite(torch.tensor(history[k])).all() for k in history)
    metric, kept, target = kept_fraction(gated)
    assert metric == "params" and 0 < kept <= 1 and target == pytest.approx(0.9)
    assert "target" in capsys.readouterr().err          # tqdm postfix


def test_fit_steps_cycle_through_data_and_work_without_budget():
    gated = lumos.compile(_model(), (X[:2],))
    history = fit(gated, _batches(), F.mse_loss, steps=20, progress=False)
    assert len(history["penalty"]) == 20
    assert kept_fraction(gated)[2] is None


def test_saturated_gates_are_frozen_for_the_task():
    """Semi-stochastic gating (paper Eq. 1): below t_lower a gate is 0, above t_upper 1,
    and the task loss sends them no gradient; only the penalty can still move them."""
    gated = lumos.compile(_model(), (X[:2],))
    gate = lumos.gates(gated)["0"]
    with torch.no_grad():
        gate.log_alpha[:4] = -7.0          # P(z != 0) < t_lower
        gate.log_alpha[4:8] = 7.0          # P(z != 0) > t_upper
        gate.log_alpha[8:] = 0.0
    q = gate.open_probability()
    assert (q[:4] < gate.config.t_lower).all() and (q[4:8] > gate.config.t_upper).all()
    for _ in range(5):
        z = gate()
        assert (z[:4] == 0).all() and (z[4:8] == 1).all()
    F.mse_loss(gated(X[:32]), Y[:32]).backward()
    assert (gate.log_alpha.grad[:8] == 0).all()
    assert gate.log_alpha.grad[8:].abs().sum() > 0
    gated.zero_grad()
    lumos.penalty(gated).backward()
    assert (gate.log_alpha.grad[:8] != 0).all()


def test_extracted_model_fine_tunes_like_any_module():
    gated = lumos.compile(_model(), (X[:2],))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[:10] = -6.0
        lumos.gates(gated)["input"].log_alpha[3:] = -6.0
    pruned = lumos.extract(gated)
    first_layer = pruned.get_submodule("0")
    assert first_layer.weight.shape == (6, 3)
    assert lumos.verify(gated, pruned, (X[:16],)) < 1e-5
    pruned.train()
    opt = torch.optim.Adam(pruned.parameters(), lr=1e-2)
    first = None
    for _ in range(3):
        for x, y in _batches():
            loss = F.mse_loss(pruned(x), y)
            first = first if first is not None else float(loss.detach())
            opt.zero_grad()
            loss.backward()
            assert all(p.grad is not None for p in pruned.parameters())
            opt.step()
    with torch.no_grad():
        assert float(F.mse_loss(pruned(X), Y)) < first
    assert pruned(X).shape == (len(X), 1)


def test_training_an_eval_mode_model_warns_once():
    """A Hugging Face model comes back from from_pretrained in eval mode and compile keeps it:
    backpropagating the penalty then trains without gate samples or controller steps."""
    gated = lumos.compile(_model().eval(), (X[:2],), budget=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lumos.penalty(gated).item()                 # reading the value is fine
    x, y = _batches()[0]
    with pytest.warns(UserWarning, match=r"eval mode.*gated.train\(\)") as record:
        for _ in range(3):
            (F.mse_loss(gated(x), y) + lumos.penalty(gated)).backward()
    assert sum("eval mode" in str(w.message) for w in record) == 1
    assert int(gated.lumos_budget.step) == 0
    gated.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="lumos.penalty is being trained")
        (F.mse_loss(gated(x), y) + lumos.penalty(gated)).backward()


def test_gate_group_is_fused_only_where_fused_kernels_run():
    from lumos_fx.training import _fusable
    assert _fusable(torch.zeros(2)) and _fusable(torch.zeros(2, dtype=torch.float64))
    assert not _fusable(torch.zeros(2, device="meta"))
    assert not _fusable(torch.zeros(2, dtype=torch.complex64))
    gated = lumos.compile(_model(), (X[:2],)).to("meta")
    assert "fused" not in lumos.param_groups(gated)[-1]


@pytest.mark.parametrize("budget", [None, 0.3])
def test_a_step_under_autocast_trains_the_gates_in_float32(budget):
    """Mixed precision (``torch.autocast``): the model runs in bfloat16, the penalty's
    cost products stay float32 (a bfloat16 slope against the float32 gradient link made
    ``torch.dot`` fail)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 6),), budget=budget)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gated(torch.randn(8, 6))
        penalty = lumos.penalty(gated)
        params, _ = lumos.expected_cost(gated)
    assert out.dtype == torch.bfloat16
    assert penalty.dtype == params.dtype == torch.float32
    (out.float().square().mean() + penalty).backward()
    assert all(torch.isfinite(g.log_alpha.grad).all() for g in lumos.gates(gated).values())
