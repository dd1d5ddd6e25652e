"""Reductions: vector norms over a channel dim are gated consumers, read with their own
argument order (``ord`` before ``dim``)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import randomize_gates

NORMS = {
    "normalize": lambda h: F.normalize(h, dim=-1),
    "norm_keepdim": lambda h: h * h.norm(dim=-1, keepdim=True),
    "norm_p1": lambda h: h / torch.norm(h, p=1, dim=1, keepdim=True),
    "vector_norm_3": lambda h: h * torch.linalg.vector_norm(h, 3, dim=-1, keepdim=True),
    "vector_norm_inf": lambda h: h * torch.linalg.vector_norm(h, float("inf"), dim=-1,
                                                              keepdim=True),
    "norm_dropped_dim": lambda h: h * h.norm(dim=1)[:, None],
}


class Normed(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.fc, self.out = kind, nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(NORMS[self.kind](torch.tanh(self.fc(x))))


@pytest.mark.parametrize("kind", list(NORMS))
def test_norms_over_channels_prune_exactly(kind):
    torch.manual_seed(0)
    gated = lumos.compile(Normed(kind).eval(), example_inputs=(torch.randn(3, 5),))
    assert {g.name: g.pinned for g in lumos.report(gated).groups}["fc"] is None
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[[0, 3, 6]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape == (5, 5)
    assert lumos.verify(gated, pruned, (torch.randn(4, 5),)) < 1e-5


class NegativeOrder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.out(h / torch.linalg.vector_norm(h, -1, dim=1, keepdim=True))


def test_a_norm_of_negative_order_pins_and_a_norm_over_time_keeps_channels():
    gated = lumos.compile(NegativeOrder(), example_inputs=(torch.randn(3, 5),))
    assert "over a channel dim" in {g.name: g.pinned for g in lumos.report(gated).groups}["fc"]
    model = nn.Sequential(nn.Conv1d(3, 6, 1), nn.Tanh())
    over_time = lumos.compile(_TimeNorm(model), example_inputs=(torch.randn(2, 3, 7),))
    assert {g.name: g.pinned for g in lumos.report(over_time).groups}["body.0"] is None
    randomize_gates(over_time, seed=0)
    pruned = lumos.extract(over_time)
    assert lumos.verify(over_time, pruned, (torch.randn(4, 3, 7),)) < 1e-5


class _TimeNorm(nn.Module):
    """``ord=3`` given before ``dim=2``: the rule must not read the order as the dim."""

    def __init__(self, body):
        super().__init__()
        self.body, self.out = body, nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.linalg.vector_norm(self.body(x), 3, dim=2))


class PositionalOverloads(nn.Module):
    """Overloads whose arguments sit elsewhere than in ``sum.dim_IntList``:
    ``max.other`` (elementwise; the channels come from its second operand), ``std.dim``
    (``unbiased`` before ``keepdim``) and ``std.default`` (no ``dim``: all of them)."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):                                        # (B, T, 3)
        h = torch.max(x.mean(2, keepdim=True), torch.tanh(self.fc(x)))
        spread = torch.std(h, 1, False, True)                   # (B, 1, 6)
        return self.out(h / spread).mean(1) * torch.std(x, True)


def test_every_overload_of_a_reduction_is_read_by_its_own_schema():
    torch.manual_seed(0)
    gated = lumos.compile(PositionalOverloads().eval(), example_inputs=(torch.randn(2, 7, 3),))
    assert {g.name: g.pinned for g in lumos.report(gated).groups}["fc"] is None
    randomize_gates(gated, seed=4)
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape[0] < 6
    assert lumos.verify(gated, pruned, (torch.randn(4, 7, 3),)) < 1e-5


class Warp(nn.Module):
    """A learned flow field resamples the features (``grid_sample``)."""

    def __init__(self):
        super().__init__()
        self.a, self.flow = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 3, padding=1)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        grid = self.flow(h).permute(0, 2, 3, 1).tanh()
        return self.out(F.grid_sample(h, grid, align_corners=False))


class PairDistances(nn.Module):
    """SchNet-style: radial features of pairwise distances (``cdist`` of positions) weight
    the neighbours' features."""

    def __init__(self):
        super().__init__()
        self.emb, self.rbf, self.out = nn.Linear(5, 16), nn.Linear(8, 16), nn.Linear(16, 1)
        self.register_buffer("centers", torch.linspace(0, 3, 8))

    def forward(self, pos, feat):
        d = torch.cdist(pos, pos)
        radial = torch.exp(-(d[..., None] - self.centers) ** 2)
        msg = torch.einsum("bijf,bjf->bif", self.rbf(radial), self.emb(feat))
        return self.out(F.silu(msg)).sum(1)


def test_grid_sample_keeps_the_sampled_channels_and_pins_the_grid():
    torch.manual_seed(0)
    gated = lumos.compile(Warp().eval(), example_inputs=(torch.randn(2, 3, 8, 8),))
    pins = {g.name: g.pinned for g in lumos.report(gated).groups}
    assert pins["a"] is None and "sampling grid" in pins["flow"]
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert pruned.a.weight.shape[0] < 8
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 8, 8),)) < 1e-5


def test_cdist_gates_the_coordinates_of_both_operands():
    torch.manual_seed(0)
    model = PairDistances().eval()
    inputs = (torch.randn(2, 6, 3), torch.randn(2, 6, 5))
    gated = lumos.compile(model, example_inputs=inputs)
    assert lumos.gates(gated)["pos"].size == 3
    with torch.no_grad():
        lumos.gates(gated)["pos"].log_alpha[2] = -6.0             # z does not matter
    pruned = lumos.extract(gated)
    assert pruned.lumos_kept_inputs["pos"] == [0, 1]
    assert lumos.verify(gated, pruned, (torch.randn(3, 6, 3), torch.randn(3, 6, 5))) < 1e-5
