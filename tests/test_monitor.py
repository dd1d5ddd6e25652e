"""``TrainingMonitor``: what it records, when, how it shows it, and where it keeps it."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from lumos_fx.monitor import FIELDS


def _gated(**kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    return lumos.compile(model, example_inputs=(torch.randn(4, 6),), **kwargs)


def _train(gated, monitor, steps):
    opt = torch.optim.Adam(lumos.param_groups(gated, lr=1e-2, gate_lr=0.2))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(32, 6, generator=gen)
        task = F.mse_loss(gated(x), x[:, :1])
        opt.zero_grad()
        (task + lumos.penalty(gated)).backward()
        opt.step()
        monitor.step(loss=task)


@pytest.mark.filterwarnings("ignore:lumos budget")
def test_records_follow_the_expected_size_and_the_budget():
    gated = _gated(budget=lumos.Budget(params=0.3, warmup=20))
    monitor = lumos.TrainingMonitor(gated, every=10, progress=False)
    _train(gated, monitor, 60)
    history = monitor.history
    assert [r["step"] for r in history] == [1, 10, 20, 30, 40, 50, 60]
    assert all(tuple(r) == FIELDS for r in history)
    params, flops = lumos.expected_cost(gated)
    total = gated.lumos_cost.total_params
    assert history[-1]["params"] == pytest.approx(float(params))
    assert history[-1]["kept_params"] == pytest.approx(float(params) / total)
    assert history[-1]["flops"] == pytest.approx(float(flops))
    assert history[-1]["kept_params"] < history[0]["kept_params"]       # the gates closed
    assert history[0]["target"] > history[-1]["target"] == pytest.approx(0.3)
    assert all(isinstance(r["loss"], float) for r in history)


def test_history_lives_on_the_model_and_survives_save_and_a_second_monitor(tmp_path):
    gated = _gated()
    _train(gated, lumos.TrainingMonitor(gated, every=5, progress=False), 10)
    again = lumos.TrainingMonitor(gated, every=5, progress=False)
    _train(gated, again, 5)
    assert [r["step"] for r in again.history] == [1, 5, 10, 11, 15]
    torch.save(gated, tmp_path / "gated.pt")
    loaded = torch.load(tmp_path / "gated.pt", weights_only=False)
    assert [r["step"] for r in lumos.report(loaded).history] == [1, 5, 10, 11, 15]
    assert target_is_none(loaded)


def target_is_none(gated) -> bool:
    return all(r["target"] is None and r["metric"] == "params" for r in lumos.report(gated).history)


def test_progress_bar_shows_kept_fractions_and_target(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    gated = _gated(budget=lumos.Budget(flops=0.5, warmup=100))
    with lumos.TrainingMonitor(gated, every=2, total=4) as monitor:
        _train(gated, monitor, 4)
    text = err.getvalue()
    assert "lumos" in text and "4/4" in text
    for key in ("loss=", "params=", "flops=", "target="):
        assert key in text, text
    assert monitor.history[-1]["metric"] == "flops"


def test_attach_loss_fills_the_latest_record_only():
    gated = _gated()
    monitor = lumos.TrainingMonitor(gated, every=2, progress=False)
    monitor.step()
    monitor.attach_loss(0.5)
    monitor.step()
    monitor.step()
    monitor.attach_loss(9.0)              # step 3 was not recorded: nothing to fill
    assert [(r["step"], r["loss"]) for r in monitor.history] == [(1, 0.5), (2, None)]


def test_bad_options_and_losses_are_input_errors():
    gated = _gated()
    for kwargs in ({"every": 0}, {"every": 1.5}, {"total": 0}, {"progress": "yes"}):
        with pytest.raises(lumos.InputError):
            lumos.TrainingMonitor(gated, **kwargs)
    monitor = lumos.TrainingMonitor(gated, every=1, progress=False)
    with pytest.raises(lumos.InputError, match="scalar"):
        monitor.step(loss=torch.ones(3))
    with pytest.raises(lumos.InputError, match="loss"):
        monitor.step(loss="low")
    with pytest.raises(lumos.InputError, match="compile"):
        lumos.TrainingMonitor(nn.Linear(2, 2))


def test_fit_records_into_the_report():
    gated = _gated()
    x = torch.randn(64, 6)
    batches = [(x[i:i + 16], x[i:i + 16, :1]) for i in range(0, 64, 16)]
    history = lumos.fit(gated, batches, F.mse_loss, epochs=3, refresh=4, progress=False)
    records = lumos.report(gated).history
    assert [r["step"] for r in records] == [1, 4, 8, 12]
    assert records[-1]["loss"] == pytest.approx(history["loss"][-1])
    with pytest.raises(lumos.InputError, match="refresh"):
        lumos.fit(gated, batches, F.mse_loss, refresh=0)
