"""Constant picks along a channel dim: literal indices, masks and narrows relabel."""
import numpy as np
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.errors import ExactnessError
from lumos_fx.rules.gather import rewritten_index
from lumos_fx.verify import eval_mode_error
from tests.test_exactness_zoo import gate_widths, randomize_gates


def test_rewritten_index_maps_kept_picks_into_kept_channels():
    kept_in = np.array([0, 2, 3, 4])                 # channel 1 closed
    positions = np.array([4, 1, 0, 4])
    kept_out = np.array([0, 2, 3])                   # the pick of channel 1 left
    assert rewritten_index(kept_in, positions, kept_out).tolist() == [3, 0, 3]


class CoordinatesAndFeatures(nn.Module):
    """``x[:, [0, 2, 1]]`` (coordinates, reordered) and ``x[:, 3:]`` read by two layers."""

    def __init__(self):
        super().__init__()
        self.coords = nn.Linear(3, 8)
        self.feats = nn.Linear(5, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.coords(x[:, [0, 2, 1]]) + self.feats(x[:, 3:])))


def test_a_literal_index_of_input_features_keeps_feature_selection():
    torch.manual_seed(0)
    model = CoordinatesAndFeatures().eval()
    x = torch.randn(4, 8)
    gated = lumos.compile(model, example_inputs=(x,))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["x"].pinned is None and gate_widths(gated)["x"] == 8
    with torch.no_grad():
        lumos.gates(gated)["x"].log_alpha[[2, 5]] = -6.0        # a coordinate and a feature
    pruned = lumos.extract(gated)
    assert pruned.lumos_kept_inputs["x"] == [0, 1, 3, 4, 6, 7]
    assert pruned.coords.weight.shape == (8, 2) and pruned.feats.weight.shape == (8, 4)
    assert lumos.verify(gated, pruned, (torch.randn(6, 8),)) < 1e-5


class PickedHidden(nn.Module):
    """Hidden channels picked by a literal (with a repeat) or a narrow; a boolean mask
    gets a data-dependent size that torch.export asserts on, which pins."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear({"index": 5, "index_select": 5, "mask": 3, "narrow": 4}[how], 2)
        self.register_buffer("mask", torch.tensor([True, False, True, True, False, False]))

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        if self.how == "index":
            h = h[:, [5, 1, 5, 0, 3]]
        elif self.how == "index_select":
            h = h.index_select(1, torch.tensor([5, 1, 5, 0, 3]))
        elif self.how == "mask":
            h = h[:, self.mask]
        else:
            h = h.narrow(1, 1, 4)
        return self.out(h)


def test_a_boolean_mask_of_hidden_channels_pins_and_stays_exact():
    torch.manual_seed(0)
    gated = lumos.compile(PickedHidden("mask").eval(), example_inputs=(torch.randn(3, 4),))
    assert {g.name: g for g in lumos.report(gated).groups}["fc"].pinned is not None
    randomize_gates(gated, seed=1)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(5, 4),)) < 1e-5


@pytest.mark.parametrize("how", ["index", "index_select", "narrow"])
def test_constant_picks_of_hidden_channels_prune_exactly(how):
    torch.manual_seed(0)
    model = PickedHidden(how).eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 4),))
    assert {g.name: g for g in lumos.report(gated).groups}["fc"].pinned is None
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[[1, 5]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape[0] == 4
    assert pruned.out.weight.shape[1] == {"index": 2, "index_select": 2, "narrow": 3}[how]
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-5
    randomize_gates(gated, seed=1)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(5, 4),)) < 1e-5


class ComputedIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        order = torch.argsort(self.fc.bias)[:3]          # known only at run time
        return self.out(self.fc(x)[:, order])


def test_a_computed_index_on_a_channel_dim_still_pins():
    gated = lumos.compile(ComputedIndex(), example_inputs=(torch.randn(3, 4),))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert "indexes into a channel dim" in groups["fc"].pinned


class MultiQueryAttention(nn.Module):
    """Falcon's layout: one packed projection of 4 query heads and one shared key/value
    head, picked by literal indices, the key/value broadcast over the query heads."""

    def __init__(self, heads: int = 4, head_dim: int = 4):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.embed = nn.Linear(5, 16)
        self.qkv = nn.Linear(16, (heads + 2) * head_dim)
        self.ffn = nn.Linear(16, 24)
        self.proj = nn.Linear(heads * head_dim, 16)
        self.readout = nn.Linear(24, 3)

    def forward(self, x):
        b, n, _ = x.shape
        h = self.embed(x)
        fused = self.qkv(h).view(b, n, self.heads + 2, self.head_dim)
        q, k, v = fused[..., :-2, :], fused[..., [-2], :], fused[..., [-1], :]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        attn = nn.functional.scaled_dot_product_attention(q, k, v)
        h = h + self.proj(attn.transpose(1, 2).reshape(b, n, -1))
        return self.readout(torch.relu(self.ffn(h)))


def test_multi_query_attention_lives_or_dies_whole_and_the_rest_prunes():
    torch.manual_seed(0)
    model = MultiQueryAttention().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 6, 5),))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["qkv"].pinned is None and gate_widths(gated)["qkv"] == 1
    randomize_gates(gated, seed=2)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(3, 7, 5),)) < 1e-5
    with torch.no_grad():
        lumos.gates(gated)["qkv"].log_alpha.fill_(-6.0)
    pruned = lumos.extract(gated)
    assert "qkv" not in dict(pruned.named_children())
    assert lumos.verify(gated, pruned, (torch.randn(3, 7, 5),)) < 1e-5


class GroupedBroadcast(nn.Module):
    """Falcon's new layout: ``(B, N, groups, q_per_group + 2, D)``, the key of each group
    picked by a literal and broadcast with literal sizes to its query heads."""

    def __init__(self, groups: int = 3, per_group: int = 2, head_dim: int = 4):
        super().__init__()
        self.groups, self.per_group, self.head_dim = groups, per_group, head_dim
        self.qkv = nn.Linear(8, groups * (per_group + 2) * head_dim)
        self.proj = nn.Linear(groups * per_group * head_dim, 8)

    def forward(self, x):
        b, n, _ = x.shape
        g, p, d = self.groups, self.per_group, self.head_dim
        fused = self.qkv(x).view(b, n, g, p + 2, d)
        q = fused[:, :, :, :-2].reshape(b, n, g * p, d).transpose(1, 2)
        k, v = (torch.broadcast_to(fused[:, :, :, [i]], (b, n, g, p, d))
                .reshape(b, n, g * p, d).transpose(1, 2) for i in (-2, -1))
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(1, 2).reshape(b, n, g * p * d))


def test_broadcast_to_with_literal_sizes_follows_the_kept_groups():
    torch.manual_seed(0)
    model = GroupedBroadcast().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 5, 8),))
    assert gate_widths(gated)["qkv"] == 3
    with torch.no_grad():
        lumos.gates(gated)["qkv"].log_alpha[1] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.qkv.weight.shape[0] == 2 * 4 * 4
    assert lumos.verify(gated, pruned, (torch.randn(3, 7, 8),)) < 1e-5


class Crashes(nn.Module):
    def forward(self, x):
        return x.view(5, -1)


def test_an_extracted_model_that_fails_to_run_is_an_exactness_error():
    with pytest.raises(ExactnessError, match="extracted model fails on inputs"):
        eval_mode_error(nn.Identity(), Crashes(), (torch.randn(2, 3),), (torch.randn(2, 3),))
