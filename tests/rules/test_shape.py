"""Label maps of shape ops: flatten boundaries, views, concat and splits."""
import numpy as np
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.rules.shape import _aligned_groups, merge_labels
from tests.models.zoo import randomize_norms
from tests.test_exactness_zoo import gate_widths, randomize_gates


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
    assert pruned.fc.weight.shape[1] == 2 * 16 and pruned.conv.weight.shape[0] == 2


class SplitHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(2, 1)

    def forward(self, x):
        return self.out(self.fc(x).view(-1, 4, 2).sum(1))


def test_view_that_splits_a_channel_dim_prunes_whole_blocks():
    """``(8) -> (4, 2)``: each of the 4 outer entries owns 2 rows of fc, a block."""
    groups, gated = _groups(SplitHeads(), torch.randn(3, 4))
    assert groups["fc"].pinned is None and groups["fc"].total == 4
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[1] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape == (6, 4)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-6


class MergeAndSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 1)
        self.out = nn.Linear(3, 1)

    def forward(self, x):                     # (B, 6, 2, 2) -> (B, 3, 8): merges and splits
        return self.out(self.conv(x).reshape(-1, 3, 8).transpose(1, 2)).sum((1, 2))


def test_a_reshape_that_merges_and_splits_a_channel_dim_prunes_blocks():
    """``(6, 2, 2) -> (3, 8)``: row r holds channels 2r and 2r+1, so they go together."""
    groups, gated = _groups(MergeAndSplit(), torch.randn(3, 2, 2, 2))
    assert groups["conv"].pinned is None and groups["conv"].total == 3
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha[1] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.conv.weight.shape[0] == 4
    assert lumos.verify(gated, pruned, (torch.randn(5, 2, 2, 2),)) < 1e-6


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
    assert pruned.fc.weight.shape[0] == 6 - len(closed)


class _Skips(nn.Module):
    """The idioms that used to pin needlessly: each keeps conv ``a`` prunable."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 8)
        self.unpool = nn.MaxUnpool2d(2)
        self.out = nn.Conv2d(16 if kind == "interpolate" else 8, 4, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.kind == "interpolate":      # UNet decoders size to the skip
            up = torch.nn.functional.interpolate(torch.relu(self.b(h)), size=h.shape[2:])
            return self.out(torch.cat([up, h], 1))
        if self.kind == "pool_indices":
            pooled, indices = torch.nn.functional.max_pool2d(h, 2, return_indices=True)
            return self.out(self.unpool(pooled, indices))
        if self.kind == "expand_as":        # squeeze-and-excitation written with expand_as
            w = torch.sigmoid(self.fc(h.mean((2, 3))))[:, :, None, None]
            return self.out(h * w.expand_as(h))
        b, c, hh, ww = h.size()             # sizes read from the tensor
        return self.out(h.view(b, c, hh * ww).mean(-1)[:, :, None, None])


@pytest.mark.parametrize("kind", ["interpolate", "pool_indices", "expand_as", "view_sizes"])
def test_common_idioms_do_not_pin_channels(kind):
    gated = lumos.compile(_Skips(kind), example_inputs=(torch.randn(2, 3, 8, 8),))
    assert "a" in lumos.gates(gated), lumos.report(gated)
    with torch.no_grad():
        lumos.gates(gated)["a"].log_alpha[::2] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_submodule("a").weight.shape[0] == 4
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-6


def test_a_channel_count_used_in_arithmetic_stays_the_captured_constant():
    """torch.export records ``h.shape[1]`` of a static dim as the literal 8: the pruned
    model keeps dividing by 8, as the gated model does, so the channels can shrink."""
    class Arith(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            return self.fc(h.sum((2, 3))) / h.shape[1]

    gated = lumos.compile(Arith(), example_inputs=(torch.randn(2, 3, 4, 4),))
    assert "a" in lumos.gates(gated)
    with torch.no_grad():
        lumos.gates(gated)["a"].log_alpha[:3] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.a.weight.shape[0] == 5
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 4, 4),)) < 1e-6


class PatchUnfold(nn.Module):
    """MobileViT's unfolding: channels merged with the batch and patch rows,
    ``reshape(B * C * rows, patch, cols, patch)``, so export writes the size as a
    chain of products, ``(B * C) * rows``; attention-free mixing over the patches,
    then the inverse folding back to ``(B, C, H, W)``."""

    def __init__(self, channels: int = 6, patch: int = 2):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.mix = nn.Linear(channels, channels)
        self.conv_out = nn.Conv2d(channels, 4, 1)
        self.patch = patch

    def forward(self, x):
        f = self.conv_in(x)
        b, c, h, w = f.shape
        p, rows, cols = self.patch, h // self.patch, w // self.patch
        patches = f.reshape(b * c * rows, p, cols, p).transpose(1, 2)
        patches = patches.reshape(b, c, rows * cols, p * p).permute(0, 3, 2, 1)
        patches = patches + self.mix(patches)                       # (B, p*p, N, C)
        folded = patches.permute(0, 3, 2, 1).reshape(b * c * rows, cols, p, p)
        folded = folded.transpose(1, 2).reshape(b, c, h, w)
        return self.conv_out(folded)


def test_channels_merged_with_the_batch_through_a_chain_of_products_shrink():
    torch.manual_seed(0)
    model = PatchUnfold().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert gate_widths(gated)["conv_in"] == 6
    with torch.no_grad():
        lumos.gates(gated)["conv_in"].log_alpha.copy_(torch.tensor([4.0, -6.0, 4.0, 4.0,
                                                                     -6.0, 4.0]))
    pruned = lumos.extract(gated)           # crashed: the size's literal was 2 of 2 * C
    assert pruned.conv_in.weight.shape[0] == 4
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-5


class BatchNormTokens(nn.Module):
    """LeViT's linear + BatchNorm over tokens: ``bn(h.flatten(0, 1)).reshape_as(h)``."""

    def __init__(self, widths=(6, 10, 6)):
        super().__init__()
        self.up, self.down = nn.Linear(widths[0], widths[1]), nn.Linear(widths[1], widths[2])
        self.bn_up, self.bn_down = nn.BatchNorm1d(widths[1]), nn.BatchNorm1d(widths[2])

    def forward(self, x):
        h = self.up(x)
        h = torch.nn.functional.hardswish(self.bn_up(h.flatten(0, 1)).reshape_as(h))
        h = self.down(h)
        return x + self.bn_down(h.flatten(0, 1)).view_as(h)


class ReshapedLikeTheInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.fc(x).reshape_as(x))


def test_reshape_as_follows_the_channels_of_the_tensor_it_reads_its_sizes_from():
    torch.manual_seed(0)
    model = randomize_norms(BatchNormTokens()).eval()
    x = torch.randn(2, 5, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["up"].pinned is None
    randomize_gates(gated, seed=3)
    pruned = lumos.extract(gated)
    assert pruned.up.weight.shape[0] < 10
    assert lumos.verify(gated, pruned, (torch.randn(3, 7, 6),)) < 1e-5
    # sized by the input: fc's channels are the input's features, dropped together
    other = lumos.compile(ReshapedLikeTheInput(), example_inputs=(torch.randn(2, 8),))
    assert "fc" not in gate_widths(other) and gate_widths(other)["x"] == 8
    randomize_gates(other, seed=3)
    pruned = lumos.extract(other)
    assert pruned.fc.weight.shape[0] == len(pruned.lumos_kept_inputs["x"]) < 8
    assert lumos.verify(other, pruned, (torch.randn(5, 8),)) < 1e-5


class ReadsOneFeature(nn.Module):
    """A PINN-style model that also reads the time input ``x[:, 0]`` on its own, and one
    hidden channel ``h[:, 1]``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        h = self.net(x)
        return self.out(h) * torch.exp(-x[:, 0])[:, None] + h[:, 1][:, None]


def test_a_channel_read_by_select_survives_and_its_group_stays_prunable():
    torch.manual_seed(0)
    gated = lumos.compile(ReadsOneFeature(), example_inputs=(torch.randn(4, 6),))
    pins = {g.name: g.pinned for g in lumos.report(gated).groups}
    assert pins["x"] is None and pins["net.2"] is None          # before: both pinned
    hidden = lumos.gates(gated)["net.2"]
    with torch.no_grad():     # the selected channel costs nothing to close: it stays
        before = lumos.expected_cost(gated)[0]
        hidden.log_alpha[1] = -6.0
        assert torch.isclose(lumos.expected_cost(gated)[0], before)
        lumos.gates(gated)["x"].log_alpha[[0, 2]] = -6.0
        hidden.log_alpha[[3, 5]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.lumos_kept_inputs["x"] == [0, 1, 3, 4, 5]         # time stays, 2 goes
    assert pruned.get_submodule("net.2").weight.shape[0] == 30
    assert lumos.verify(gated, pruned, (torch.randn(5, 6),)) < 1e-5
