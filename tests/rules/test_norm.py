"""Normalization rules: LayerNorm/RMSNorm over pruned channels keep the original divisor."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos


class Normed(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(6, 16), norm(16), nn.Linear(16, 2)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


@pytest.mark.parametrize("norm", [nn.LayerNorm, nn.RMSNorm,
                                  lambda c: nn.LayerNorm(c, elementwise_affine=False)],
                         ids=["layernorm", "rmsnorm", "layernorm-no-affine"])
def test_norm_over_the_channel_dim_shrinks_exactly(norm):
    torch.manual_seed(0)
    model = Normed(norm).eval()
    with torch.no_grad():
        for p in model.norm.parameters():
            p.uniform_(0.5, 1.5)
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 6),))
    with torch.no_grad():
        lumos.gates(gated)["a"].log_alpha[:5] = -6.0
        lumos.gates(gated)["a"].log_alpha[5] = 0.0          # a partly open gate (0 < z < 1)
    pruned = lumos.extract(gated)
    assert pruned.a.weight.shape[0] == 11
    # normalised over the original 16 channels: the kept 11 padded back with zeros
    assert "constant_pad_nd" in pruned.code and "16" in pruned.code, pruned.code
    assert lumos.verify(gated, pruned, (torch.randn(9, 6),)) < 1e-6


def test_norm_over_several_dims_pins():
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 1), nn.LayerNorm([4, 5, 5])
            self.head = nn.Linear(100, 1)

        def forward(self, x):
            return self.head(self.norm(self.conv(x)).flatten(1))

    gated = lumos.compile(Spatial(), example_inputs=(torch.randn(2, 3, 5, 5),))
    assert "conv" not in lumos.gates(gated)


def test_group_norm_with_one_channel_per_group_follows_its_channels():
    torch.manual_seed(0)
    norm = nn.GroupNorm(16, 16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(nn.Conv1d(3, 16, 5), norm, nn.GELU(), nn.Conv1d(16, 8, 3)).eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 40),))
    assert lumos.gates(gated)["0"].log_alpha.numel() == 16
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[::3] = -10.0
    pruned = lumos.extract(gated)
    assert getattr(pruned, "1").weight.shape == (10,)
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 40),)) < 1e-5


def test_group_norm_with_larger_groups_gates_whole_groups():
    model = nn.Sequential(nn.Conv1d(3, 16, 5), nn.GroupNorm(4, 16), nn.Conv1d(16, 8, 3))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 40),))
    assert lumos.gates(gated)["0"].size == 4


class PoolMixer(nn.Module):
    """PoolFormer's block: ``GroupNorm(1, C)`` (a LayerNorm over channels and pixels), a
    pooling token mixer with a residual, a conv MLP."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, 2)
        self.norm1, self.norm2 = nn.GroupNorm(1, 16), nn.GroupNorm(1, 16, affine=False)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.fc1, self.fc2, self.head = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1), nn.Linear(16, 2)
        with torch.no_grad():
            self.norm1.weight.uniform_(0.5, 1.5), self.norm1.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm1(x)
        x = x + self.pool(y) - y
        x = x + self.fc2(torch.relu(self.fc1(self.norm2(x))))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_group_norm_with_one_group_keeps_its_divisor_and_shrinks_exactly(mode):
    torch.manual_seed(0)
    model = PoolMixer().train(mode == "train")
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert lumos.gates(gated)["stem"].log_alpha.numel() == 16
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model.eval()(x))
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::3] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.norm1.weight.shape == (10,) and pruned.stem.weight.shape[0] == 10
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-5


class GroupNormBlock(nn.Module):
    """A U-Net block: ``GroupNorm(4, 16)`` normalizes four groups of four channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.out(nn.functional.silu(self.norm(self.conv(x))))


def test_group_norm_with_larger_groups_prunes_whole_groups():
    torch.manual_seed(0)
    model = GroupNormBlock().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert lumos.gates(gated)["conv"].size == 4              # one gate per group
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha[2] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.conv.weight.shape[0] == 12 and pruned.norm.weight.shape == (12,)
    assert [n.args[1] for n in pruned.graph.nodes if "group_norm" in str(n.target)] == [3]
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-5
