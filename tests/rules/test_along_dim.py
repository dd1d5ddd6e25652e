"""Ops along one named dim (roll, flip, scans, sorts, windows) and torch's op aliases."""
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import gate_widths, randomize_gates


def _pins(gated):
    return {g.name: g.pinned for g in lumos.report(gated).groups}


class PeriodicCNN(nn.Module):
    """A periodic boundary by ``roll``, a channel ``flip``, a scan, a sort and a top-k
    over space, and ``torch.multiply``: none of them along the channels but the flip."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.c1(torch.roll(x, shifts=(1, -1), dims=(2, 3))))
        h = torch.flip(h, dims=(1,))
        h = torch.multiply(h, 2.0) + torch.cumsum(h, dim=2) * 0.1
        h, _ = torch.sort(h, dim=3)
        h = self.c2(torch.subtract(h, torch.diff(h, dim=2, prepend=h[:, :, :1])))
        return self.fc(torch.topk(h.flatten(2), 4, dim=2).values.mean(2))


def test_ops_along_spatial_dims_keep_every_channel_prunable():
    torch.manual_seed(0)
    model = PeriodicCNN().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3, 8, 8),))
    pins = _pins(gated)
    assert pins["x"] is None and pins["c1"] is None and pins["c2"] is None
    randomize_gates(gated, seed=0)
    pruned = lumos.extract(gated)
    assert pruned.c1.weight.shape[0] < 8 and pruned.c2.weight.shape[0] < 8
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-5


class Windows(nn.Module):
    """Sliding windows over time (``Tensor.unfold``) of a ``(batch, time, features)`` series."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 6)
        self.head = nn.Linear(6 * 4, 1)

    def forward(self, x):
        w = self.embed(x).unfold(1, 4, 2)             # (B, windows, 6, 4)
        return self.head(w.flatten(2)).mean(1)


def test_windows_over_time_keep_feature_selection_and_channels():
    torch.manual_seed(0)
    gated = lumos.compile(Windows().eval(), example_inputs=(torch.randn(2, 10, 5),))
    assert _pins(gated)["x"] is None and gate_widths(gated)["embed"] == 6
    randomize_gates(gated, seed=1)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(3, 12, 5),)) < 1e-5


class FoldUnfold(nn.Module):
    """``nn.Unfold`` patches read by a Linear (ConvBERT's span convolution), and
    ``nn.Unfold`` then ``nn.Fold`` back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 1)
        self.unfold = nn.Unfold((3, 1), padding=(1, 0))
        self.mix = nn.Linear(6 * 3, 4)
        self.fold = nn.Fold((8, 1), (3, 1), padding=(1, 0))
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        h = self.conv(x)                                # (B, 6, 8, 1)
        patches = self.unfold(h)                        # (B, 18, 8)
        mixed = self.mix(patches.transpose(1, 2))       # (B, 8, 4)
        return self.out(self.fold(patches)) + mixed.mean(-1)[:, None, :, None]


def test_unfold_and_fold_move_whole_channel_blocks():
    torch.manual_seed(0)
    gated = lumos.compile(FoldUnfold().eval(), example_inputs=(torch.randn(2, 2, 8, 1),))
    assert _pins(gated)["conv"] is None
    with torch.no_grad():
        lumos.gates(gated)["conv"].log_alpha[[0, 4]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.conv.weight.shape[0] == 4 and pruned.mix.weight.shape[1] == 12
    assert lumos.verify(gated, pruned, (torch.randn(3, 2, 8, 1),)) < 1e-5


class AlongChannels(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op, self.fc, self.out = op, nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        h = self.fc(x)
        h = {"roll": lambda: torch.roll(h, 1, 1), "cumsum": lambda: h.cumsum(1),
             "sort": lambda: h.sort(1).values}[self.op]()
        return self.out(h)


@pytest.mark.parametrize("op", ["roll", "cumsum", "sort"])
def test_ops_along_the_channel_dim_pin_it(op):
    gated = lumos.compile(AlongChannels(op), example_inputs=(torch.randn(2, 3),))
    assert f"{op} along a channel dim" in _pins(gated)["fc"]
