"""Checkpoint and resume: gates and the budget controller round-trip through ``state_dict``,
and a run stopped and resumed mid-way ends bit-identical to one that never stopped."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos

# a 20-step warm-up is too short for the gates to follow, which budget mode rightly warns about
pytestmark = pytest.mark.filterwarnings("ignore:lumos budget")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 1))


X = torch.randn(512, 8, generator=torch.Generator().manual_seed(1))
Y = (X[:, :1] * X[:, 1:2] + X[:, 2:3]).detach()


def _fresh():
    gated = lumos.compile(_model(), (X[:4],), budget=lumos.Budget(params=0.3, warmup=20))
    opt = torch.optim.Adam(lumos.param_groups(gated, lr=1e-2))
    return gated, opt


def _steps(gated, opt, n, data_gen):
    for _ in range(n):
        idx = torch.randint(0, len(X), (32,), generator=data_gen)
        loss = F.mse_loss(gated(X[idx]), Y[idx]) + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _checkpoint(gated, opt, data_gen) -> dict:
    return {"model": gated.state_dict(), "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(), "data_rng": data_gen.get_state()}


def test_state_dict_restores_gates_and_controller_exactly():
    gated, opt = _fresh()
    torch.manual_seed(0)
    _steps(gated, opt, 30, torch.Generator().manual_seed(0))
    other, _ = _fresh()
    other.load_state_dict(gated.state_dict())
    for key, gate in lumos.gates(gated).items():
        assert torch.equal(gate.log_alpha, lumos.gates(other)[key].log_alpha)
    assert torch.equal(gated.lumos_budget.state, other.lumos_budget.state)
    assert int(other.lumos_budget.step) == 30
    gated.eval(), other.eval()
    assert torch.equal(lumos.penalty(gated), lumos.penalty(other))
    a, b = lumos.extract(gated), lumos.extract(other)
    assert a.code == b.code
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_mid_run_is_bit_identical(tmp_path):
    # one run of 40 steps
    torch.manual_seed(123)
    straight, opt = _fresh()
    _steps(straight, opt, 40, torch.Generator().manual_seed(7))

    # 25 steps, save everything, build a new process-like state, load, 15 more steps
    torch.manual_seed(123)
    first, opt1 = _fresh()
    data_gen = torch.Generator().manual_seed(7)
    _steps(first, opt1, 25, data_gen)
    torch.save(_checkpoint(first, opt1, data_gen), tmp_path / "ckpt.pt")
    del first, opt1
    torch.manual_seed(999)                         # whatever happened in between
    resumed, opt2 = _fresh()
    ckpt = torch.load(tmp_path / "ckpt.pt")
    resumed.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    data_gen = torch.Generator()
    data_gen.set_state(ckpt["data_rng"])
    _steps(resumed, opt2, 15, data_gen)

    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert int(resumed.lumos_budget.step) == 40
