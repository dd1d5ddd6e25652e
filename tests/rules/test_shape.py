"""Label maps of shape ops: flatten boundaries, views, concat and splits."""
import numpy as np
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.rules.shape import _aligned_groups, merge_labels


def test_merge_labels_nchw_blocks_and_channels_last_strides():
    assert merge_labels((2, 2, 2), 0, np.array([5, 6])).tolist() == [5, 5, 5, 5, 6, 6, 6, 6]
    assert merge_labels((2, 2, 2), 2, np.array([5, 6])).tolist() == [5, 6, 5, 6, 5, 6, 5, 6]


def test_aligned_groups_pairs_merged_and_split_dims():
    assert _aligned_groups((8, 4, 3, 3), (8, 36)) == [([0], [0]), ([1, 2, 3], [1])]
    assert _aligned_groups((8, 12), (8, 3, 4)) == [([0], [0]), ([1], [1, 2])]
    assert _aligned_groups((2, 3), (3, 2)) == [([0, 1], [0, 1])]  # mixed: the rule pins it


def _groups(model, x):
    gated = lumos.compile(model, example_inputs=(x,))
    return {g.name: g for g in lumos.report(gated).groups}, gated


class ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).permute(0, 2, 3, 1).flatten(1))


def test_channels_last_flatten_gates_conv_channels_at_the_fc():
    groups, gated = _groups(ChannelsLast(), torch.randn(2, 2, 4, 4))
    assert groups["conv"].pinned is None and groups["conv"].consumers == ["fc"]
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha.copy_(torch.tensor([4.0, -6.0, 4.0]))
    pruned = lumos.extract(gated)
    assert pruned.fc.in_features == 2 * 16 and pruned.conv.out_channels == 2


class SplitHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(2, 1)

    def forward(self, x):
        return self.out(self.fc(x).view(-1, 4, 2).sum(1))


def test_view_that_splits_a_channel_dim_pins_it():
    groups, _ = _groups(SplitHeads(), torch.randn(3, 4))
    assert "splits a channel dim" in groups["fc"].pinned


class Chunked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.a, self.b = nn.Linear(3, 1), nn.Linear(3, 1)

    def forward(self, x):
        p, q = self.fc(x).chunk(2, dim=1)
        return self.a(p) * self.b(q[:, :])


@pytest.mark.parametrize("closed", [[0, 1], [0, 3, 4], [2]])
def test_chunk_on_channels_becomes_split_with_kept_sizes(closed):
    model, x = Chunked(), torch.randn(5, 4)
    gated = lumos.compile(model, example_inputs=(x,))
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[closed] = -6.0
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(7, 4),)) < 1e-6
    assert pruned.fc.out_features == 6 - len(closed)
