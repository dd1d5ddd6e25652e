"""One name per group across ``gates()``, ``report()`` and the HTML report; ``state_dict``
keys keep their layout so existing checkpoints load."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.channels import ChannelGraph
from lumos_fx.naming import gate_keys, group_names


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.layer1(torch.relu(self.stem(x))).mean((2, 3)))


def _gated():
    torch.manual_seed(0)
    return lumos.compile(Net(), example_inputs=(torch.randn(2, 3, 8, 8),))


def test_gates_and_report_use_the_same_dotted_module_paths():
    gated = _gated()
    names = set(lumos.gates(gated))
    assert {"x", "stem", "layer1.0.conv1", "layer1.1.conv1"} <= names
    assert "layer1_0_conv1" not in names
    report = lumos.report(gated)
    gated_rows = {g.name for g in report.groups if g.key is not None}
    assert gated_rows == names
    html = report.to_html()
    for name in names:
        assert f">{name}<" in html


def test_state_dict_keys_keep_their_layout_and_are_reported():
    gated = _gated()
    keys = gate_keys(gated)
    assert keys["layer1.0.conv1"] == "layer1_0_conv1" and keys["x"] == "x"
    state = gated.state_dict()
    for name, key in keys.items():
        gate = lumos.gates(gated)[name]
        assert torch.equal(state[f"lumos_gates.{key}.log_alpha"], gate.log_alpha)
    rows = {g["name"]: g["key"] for g in lumos.report(gated).to_dict()["groups"]}
    assert all(rows[name] == key for name, key in keys.items())


def test_a_checkpoint_written_with_the_old_keys_loads():
    source, target = _gated(), _gated()
    with torch.no_grad():
        lumos.gates(source)["layer1.1.conv1"].log_alpha[:3] = -5.0
    saved = {k: v.clone() for k, v in source.state_dict().items()}
    assert "lumos_gates.layer1_1_conv1.log_alpha" in saved
    target.load_state_dict(saved)
    assert torch.equal(lumos.gates(target)["layer1.1.conv1"].log_alpha[:3], torch.full((3,), -5.0))


def test_lookup_by_state_dict_key_still_works_and_unknown_names_are_explained():
    gated = _gated()
    gates = lumos.gates(gated)
    assert gates["layer1_0_conv1"] is gates["layer1.0.conv1"]
    assert "layer1_0_conv1" not in list(gates)       # one name when listing
    with pytest.raises(KeyError, match="named by module path.*layer1.0.conv1"):
        gates["layer9.conv"]


def test_groups_that_would_share_a_name_are_numbered():
    channels = ChannelGraph()
    channels.new_space("lstm", 3)
    channels.new_space("lstm", 2)
    channels.new_space("lstm#2", 2)
    state = SimpleNamespace(plan=SimpleNamespace(channels=channels))
    assert list(group_names(state).values()) == ["lstm", "lstm#2", "lstm#2#2"]
