"""A parameter one op slices and another reads whole: stored or pinned, never wrong."""
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.prunability import smallest_fraction
from tests.test_exactness_zoo import randomize_gates


class ReturnsItsScale(nn.Module):
    """A learned per-channel scale the model also returns (to log it, or for a loss)."""

    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(4, 8), nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x):
        return self.head(torch.relu(self.lin(x)) * self.scale), self.scale


def test_a_parameter_returned_whole_pins_the_channels_that_would_slice_it():
    gated = lumos.compile(ReturnsItsScale(), example_inputs=(torch.randn(3, 4),))
    pinned = {g.name: g.pinned for g in lumos.report(gated).groups}
    assert "reads parameter scale whole" in pinned["lin"], pinned
    randomize_gates(gated, seed=0)
    pruned = lumos.extract(gated)
    assert pruned.scale.shape == (8,)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-5


class NormalizedScore(nn.Module):
    """PyG TopKPooling's score ``(h * w).sum(-1) / w.norm()``: the norm is over all of
    ``w``, which the product slices."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(8))

    def forward(self, x):
        h = torch.relu(self.lin(x))
        return torch.tanh((h * self.w).sum(-1) / self.w.norm(p=2, dim=-1))


def test_a_whole_read_computed_from_parameters_alone_is_stored_and_the_channels_prune():
    torch.manual_seed(0)
    gated = lumos.compile(NormalizedScore(), example_inputs=(torch.randn(3, 4),))
    assert smallest_fraction(gated) < 0.2
    with torch.no_grad():
        lumos.gates(gated)["lin"].log_alpha[:5] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.w.shape == (3,)
    assert dict(pruned.named_buffers())["constant"].numel() == 1       # the norm of all 8
    assert sum(p.numel() for p in pruned.parameters()) == 3 * 4 + 3 + 3
    assert lumos.verify(gated, pruned, (torch.randn(6, 4),)) < 1e-5


def test_topk_pooling_prunes_the_width_it_scores_and_extracts_exactly():
    pyg = pytest.importorskip("torch_geometric.nn")
    from tests.models.graphs import random_graphs

    class TopKNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.conv = nn.Linear(5, 16), pyg.GCNConv(16, 16)
            self.pool, self.head = pyg.TopKPooling(16, ratio=0.5), nn.Linear(16, 2)

        def forward(self, x, edge_index, batch):
            h = torch.relu(self.conv(torch.relu(self.lin(x)), edge_index))
            h, _, _, batch, _, _ = self.pool(h, edge_index, batch=batch)
            return self.head(pyg.global_mean_pool(h, batch))

    torch.manual_seed(0)
    model = TopKNet().eval()
    gated = lumos.compile(model, example_inputs=random_graphs(4, 0))
    other = random_graphs(7, 1)
    torch.testing.assert_close(gated.eval()(*other), model(*other))
    assert smallest_fraction(gated) < 0.05, lumos.report(gated)
    randomize_gates(gated, seed=1)
    assert lumos.verify(gated, lumos.extract(gated), other) < 1e-5
