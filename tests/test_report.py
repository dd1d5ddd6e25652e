"""``report()`` as data: ``to_dict``/``to_json`` carry sizes, groups, features, history,
latency; options are validated."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import lumos_fx as lumos

NAMES = ["density", "velocity", "pressure", "noise_a", "noise_b"]


def _gated(**kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 5),), feature_names=NAMES,
                          **kwargs)
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha[3:] = -6.0      # drop noise_a, noise_b
        lumos.gates(gated)["0"].log_alpha[:5] = -6.0          # 3 of 8 open
    return gated


def test_to_dict_has_sizes_groups_and_features():
    data = lumos.report(_gated()).to_dict()
    assert data["model"] == "Sequential" and data["format"] == "lumos_fx.report/1"
    # 5*8+8 + 8*8+8 + 8*2+2 = 138 before; after: 3*3+3 + 3*8+8 + 8*2+2 = 62
    assert data["params"] == {"before": 138, "after": 62}
    assert data["flops"]["after"] < data["flops"]["before"]
    groups = {g["name"]: g for g in data["groups"]}
    def row(name):
        return groups[name]["kept"], groups[name]["total"], groups[name]["kind"]
    assert row("input") == (3, 5, "input") and row("0") == (3, 8, "channels")
    assert groups["0"]["producers"] == ["0"] and groups["0"]["consumers"] == ["2"]
    assert groups["0"]["layers"] == ["0", "2"] and groups["0"]["key"] == "m0"
    assert groups["4"]["pinned"] == "model output" and groups["4"]["key"] is None
    assert data["inputs"] == {"input": {"kept": ["density", "velocity", "pressure"],
                                        "dropped": ["noise_a", "noise_b"]}}
    assert "history" not in data and "latency" not in data


def test_to_json_round_trips_and_writes_the_file(tmp_path):
    report = lumos.report(_gated())
    text = report.to_json(tmp_path / "r.json")
    assert json.loads(text) == report.to_dict()
    assert json.loads((tmp_path / "r.json").read_text()) == report.to_dict()


def test_history_from_a_monitor_is_included_and_nan_becomes_null():
    gated = _gated(budget=0.6)
    monitor = lumos.TrainingMonitor(gated, every=2, progress=False)
    x = torch.randn(16, 5)
    for loss in (1.0, math.nan, 0.5, 0.25):
        monitor.step(loss=loss)
    data = lumos.report(gated).to_dict()
    assert [r["step"] for r in data["history"]] == [1, 2, 4]
    assert data["history"][-1]["loss"] == 0.25 and data["history"][1]["loss"] is None
    assert data["history"][0]["target"] == pytest.approx(1.0)       # warm-up starts at full size
    json.dumps(data, allow_nan=False)
    gated(x)                                                        # the model still runs


def test_history_argument_overrides_the_recorded_one():
    gated = _gated()
    records = [{"step": 10, "kept_params": 0.5, "kept_flops": 0.4}]
    assert lumos.report(gated, history=records).to_dict()["history"] == records
    with pytest.raises(lumos.InputError, match="history"):
        lumos.report(gated, history="steps")
    with pytest.raises(lumos.InputError, match=r"history\[0\]"):
        lumos.report(gated, history=[{"loss": 1.0}])


def test_latency_is_validated_and_reported():
    gated = _gated()
    report = lumos.report(gated, latency={"batch 1": (4.6e-5, 2.0e-5)})
    assert report.to_dict()["latency"] == {"batch 1": {"before": 4.6e-5, "after": 2.0e-5}}
    assert "latency batch 1: 46.0 us -> 20.0 us" in str(report)
    for bad in ([1.0, 2.0], {"batch 1": (1.0,)}, {"batch 1": (-1.0, 1.0)},
                {1: (1.0, 1.0)}, {"b": (math.inf, 1.0)}):
        with pytest.raises(lumos.InputError, match="latency"):
            lumos.report(gated, latency=bad)


def test_flattened_position_gates_are_their_own_kind():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 4), nn.ReLU(), nn.Linear(4, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 2, 4, 4),))
    kinds = {g["name"]: g["kind"] for g in lumos.report(gated).to_dict()["groups"]}
    assert kinds["3:positions"] == "positions" and kinds["0"] == "channels"
    assert "3:positions" in lumos.gates(gated)


def test_report_does_not_change_the_gated_model():
    gated = _gated()
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    lumos.report(gated, latency={"b": (1.0, 0.5)}).to_html()
    after = gated.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


class SharedTable(nn.Module):
    """One embedding module registered under two names (T5's ``shared`` is also
    ``encoder.embed_tokens``); the captured graph reads it under the second."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(20, 8)
        self.encoder = nn.ModuleDict({"embed_tokens": self.shared, "fc": nn.Linear(8, 8)})
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(torch.relu(self.encoder["fc"](self.encoder["embed_tokens"](ids))))


def test_a_layer_shared_under_two_names_is_not_reported_removed():
    gated = lumos.compile(SharedTable(), example_inputs=(torch.randint(0, 20, (2, 5)),))
    report = lumos.report(gated)
    assert report.removed_layers == []
    with torch.no_grad():
        lumos.gates(gated)["encoder.fc"].log_alpha[:] = -10.0
    assert "encoder.fc" in lumos.report(gated).removed_layers


def test_a_recurrent_layers_flops_are_counted():
    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 12, batch_first=True)
            self.head = nn.Linear(12, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    x = torch.randn(4, 7, 5)
    flops = lumos.report(lumos.compile(Regressor(), example_inputs=(x,))).flops_before
    assert flops == 2 * 4 * 7 * 48 * (5 + 12) + 2 * 4 * 12     # the LSTM's products + the head
