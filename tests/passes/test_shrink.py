"""Extraction: folding, slicing, literals, inputs and branch removal."""
import pytest
import torch
from torch import nn

import lumos_fx as lumos


class Hardcoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(-1, 64))


def test_reshape_literal_is_rewritten_and_runs_at_any_batch():
    gated = lumos.compile(Hardcoded(), example_inputs=(torch.randn(2, 3, 4, 4),))
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha[1] = -6.0
    pruned = lumos.extract(gated)
    assert "reshape.default(relu, [-1, 48])" in pruned.code
    for batch in (1, 9):
        assert lumos.verify(gated, pruned, (torch.randn(batch, 3, 4, 4),)) < 1e-6


def test_extract_does_not_modify_the_gated_model():
    gated = lumos.compile(Hardcoded(), example_inputs=(torch.randn(2, 3, 4, 4),))
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha[:2] = -6.0
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    code = gated.code
    lumos.extract(gated)
    assert gated.code == code
    assert all(torch.equal(before[k], v) for k, v in gated.state_dict().items())


def test_inputs_kept_mode_takes_only_kept_features():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 5),))
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha[[0, 3]] = -6.0
    full, narrow = lumos.extract(gated), lumos.extract(gated, inputs="kept")
    x = torch.randn(4, 5)
    assert full.lumos_kept_inputs == {"input": [1, 2, 4]}
    torch.testing.assert_close(narrow(x[:, [1, 2, 4]]), full(x))
    with pytest.raises(lumos.InputError):
        lumos.extract(gated, inputs="some")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(3, 6)
        self.inner = nn.Linear(6, 5)
        self.back = nn.Linear(5, 6)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.back(torch.relu(self.inner(h)))
        return self.head(h)


def test_closed_residual_branch_is_replaced_by_its_bias():
    gated = lumos.compile(Residual(), example_inputs=(torch.randn(2, 3),))
    with torch.no_grad():
        lumos.gates(gated)["inner"].log_alpha.fill_(-8.0)
    pruned = lumos.extract(gated)
    names = {n for n, _ in pruned.named_modules()}
    assert "inner" not in names and "back" not in names
    assert lumos.verify(gated, pruned, (torch.randn(6, 3),)) < 1e-6
    assert lumos.report(gated).removed_layers == ["inner", "back"]


def test_a_fully_closed_chain_keeps_one_channel_and_stays_exact():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3),))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha.fill_(-8.0)
    with pytest.warns(UserWarning, match="outputs a constant"):
        pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(5, 3),)) < 1e-6


def test_two_silent_layers_in_a_row_become_constants():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(3, 6)
            self.a = nn.Linear(6, 5)
            self.b = nn.Linear(5, 6)
            self.c = nn.Linear(6, 6)
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            h = self.stem(x)
            h = h + self.c(self.b(torch.relu(self.a(h))))
            return self.head(h)

    gated = lumos.compile(TwoBranches(), example_inputs=(torch.randn(2, 3),))
    with torch.no_grad():
        lumos.gates(gated)["a"].log_alpha.fill_(-8.0)
        lumos.gates(gated)["b"].log_alpha.fill_(-8.0)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(7, 3),)) < 1e-6


def test_fully_closed_flatten_positions_leave_a_constant_head():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 2, 4, 4),))
    positions = [k for k in lumos.gates(gated) if k not in ("input", "0", "3")]
    assert positions, list(lumos.gates(gated))
    with torch.no_grad():
        for key in positions:
            lumos.gates(gated)[key].log_alpha.fill_(-8.0)
    with pytest.warns(UserWarning, match="outputs a constant"):
        pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(5, 2, 4, 4),)) < 1e-6


def test_all_inputs_closed_warns_and_report_agrees_with_the_extracted_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),))
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha.fill_(-8.0)
    with pytest.warns(UserWarning, match="outputs a constant"):
        pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-6
    with pytest.warns(UserWarning, match="outputs a constant"):
        report = lumos.report(gated)
    inputs = next(g for g in report.groups if g.kind == "input")
    assert inputs.kept == len(report.kept_features["input"]) == inputs.inert


def test_round_to_rounds_channel_widths_up_and_stays_exact():
    model = nn.Sequential(nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 5),))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[:11] = -6.0        # 9 of 20 open
        lumos.gates(gated)["2"].log_alpha[:4] = -6.0         # 8 of 12 open
        lumos.gates(gated)["input"].log_alpha[:2] = -6.0      # inputs are never rounded
    pruned = lumos.extract(gated, round_to=8)
    assert pruned.get_submodule("0").weight.shape == (16, 3)
    assert pruned.get_submodule("2").weight.shape == (8, 16)
    assert lumos.verify(gated, pruned, (torch.randn(6, 5),)) < 1e-6
    with pytest.raises(lumos.InputError, match="round_to"):
        lumos.extract(gated, round_to=0)
