"""Weights computed from parameters alone (weight_norm, StdConv, equalized learning rate)
are sliced as computed: extraction stores each as a plain parameter first."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import lumos_fx as lumos
from tests.test_exactness_zoo import randomize_gates


def _pins(gated):
    return {g.name: g.pinned for g in lumos.report(gated).groups}


class WeightNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = weight_norm(nn.Linear(4, 16))
        self.b = weight_norm(nn.Linear(16, 16))
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


def test_weight_norm_layers_prune_and_extract_as_plain_weights():
    torch.manual_seed(0)
    model = WeightNormMLP().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 4),))
    assert _pins(gated)["a"] is None and _pins(gated)["b"] is None
    gated.train()
    (gated(torch.randn(5, 4)).square().mean() + lumos.penalty(gated)).backward()
    assert gated.get_parameter("a.parametrizations.weight.original1").grad is not None
    with torch.no_grad():
        lumos.gates(gated)["a"].log_alpha[:6] = -6.0
        lumos.gates(gated)["b"].log_alpha[:3] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("a.weight").shape == (10, 4)
    assert pruned.get_parameter("b.weight").shape == (13, 10)
    assert not any("parametrizations" in name for name, _ in pruned.named_parameters())
    assert lumos.verify(gated, pruned, (torch.randn(6, 4),)) < 1e-5
    # the gated model still trains the parametrization, and compile left the model alone
    assert isinstance(model.a.parametrizations.weight.original1, nn.Parameter)


class TemporalBlock(nn.Module):
    """A TCN block: dilated causal weight-normed convolutions and a residual."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv1d(3, 8, 1)
        self.conv1 = weight_norm(nn.Conv1d(8, 12, 3, padding=2, dilation=1))
        self.conv2 = weight_norm(nn.Conv1d(12, 8, 3, padding=4, dilation=2))
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.inp(x)
        y = torch.relu(self.conv1(h))[..., :-2]
        y = torch.relu(self.conv2(y))[..., :-4]
        return self.head(torch.relu(h + y).mean(-1))


class StdConv2d(nn.Conv2d):
    """BiT's weight-standardized convolution."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class EqualizedLinear(nn.Linear):
    """StyleGAN's equalized learning rate: the stored weight times a constant."""

    def forward(self, x):
        return F.linear(x, self.weight * self.in_features ** -0.5, self.bias)


class Standardized(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = StdConv2d(3, 8, 3, padding=1)
        self.fc = EqualizedLinear(8, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.b(x)).mean((2, 3)))))


@pytest.mark.parametrize("model,x", [(TemporalBlock, (2, 3, 20)), (Standardized, (2, 3, 8, 8))])
def test_computed_weights_of_convolutions_prune_exactly(model, x):
    torch.manual_seed(0)
    gated = lumos.compile(model().eval(), example_inputs=(torch.randn(*x),))
    pins = _pins(gated)
    assert all(pins[name] is None for name in ("conv1", "b", "fc") if name in pins)
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(3, *x[1:]),)) < 1e-5
    if model is Standardized:       # b.weight is the model's: the computed one is named apart
        assert pruned.get_parameter("b.weight_materialized").shape[0] < 8
        assert not hasattr(pruned.b, "weight")


class LowRank(nn.Module):
    def __init__(self):
        super().__init__()
        self.u, self.v = nn.Parameter(torch.randn(32, 2)), nn.Parameter(torch.randn(2, 32))
        self.inp, self.out = nn.Linear(3, 32), nn.Linear(32, 1)

    def forward(self, x):
        return self.out(torch.relu(F.linear(torch.relu(self.inp(x)), self.u @ self.v)))


def test_a_computed_weight_larger_than_its_parameters_pins():
    gated = lumos.compile(LowRank(), example_inputs=(torch.randn(2, 3),))
    assert "computed weight" in _pins(gated)["inp"]


def test_spectral_norm_updated_in_training_pins_in_both_modes():
    model = nn.Sequential(spectral_norm(nn.Linear(4, 8)), nn.ReLU(), nn.Linear(8, 1))
    gated = lumos.compile(model.eval(), example_inputs=(torch.randn(2, 4),))
    assert "computed in one mode only" in str(_pins(gated))
    randomize_gates(gated, seed=0)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(3, 4),)) < 1e-5


class TwoInOneModule(nn.Module):
    """Two computed weights read by layers of the same module: each gets its own name."""

    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(8, 4)), nn.Parameter(torch.randn(6, 8))
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        h = torch.relu(F.linear(x, torch.tanh(self.w1)))
        return self.out(torch.relu(F.linear(h, torch.tanh(self.w2))))


def test_computed_weights_of_one_module_are_named_apart():
    torch.manual_seed(0)
    gated = lumos.compile(TwoInOneModule(), example_inputs=(torch.randn(3, 4),))
    assert {"weight", "weight_materialized"} <= set(lumos.gates(gated))
    randomize_gates(gated, seed=0)
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("weight_materialized").shape[1] == \
        pruned.get_parameter("weight").shape[0]
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-5


class SplineLayer(nn.Module):
    """A Kolmogorov-Arnold layer (efficient-KAN's B-spline basis): per-feature knot
    differences ``grid[:, p:-1] - grid[:, :-(p + 1)]`` divide the input, and ``&`` joins
    the masks of the degree-0 basis."""

    def __init__(self, features: int, out: int, knots: int = 5, order: int = 3):
        super().__init__()
        step = 2.0 / knots
        grid = torch.arange(-order, knots + order + 1) * step - 1
        self.register_buffer("grid", grid.expand(features, -1).contiguous())
        self.order = order
        self.base = nn.Parameter(torch.randn(out, features) * 0.3)
        self.spline = nn.Parameter(torch.randn(out, features, knots + order) * 0.1)

    def forward(self, x):
        g, u = self.grid, x.unsqueeze(-1)
        basis = ((u >= g[:, :-1]) & (u < g[:, 1:])).to(x.dtype)
        for p in range(1, self.order + 1):
            basis = ((u - g[:, :-(p + 1)]) / (g[:, p:-1] - g[:, :-(p + 1)]) * basis[:, :, :-1]
                     + (g[:, p + 1:] - u) / (g[:, p + 1:] - g[:, 1:-p]) * basis[:, :, 1:])
        flat = basis.view(x.size(0), -1)
        spline = self.spline.view(len(self.spline), -1)
        return F.linear(F.silu(x), self.base) + F.linear(flat, spline)


def test_tensors_computed_from_buffers_alone_are_stored_as_buffers_and_select_features():
    torch.manual_seed(0)
    model = nn.Sequential(SplineLayer(6, 12), SplineLayer(12, 2)).eval()
    x = torch.rand(8, 6) * 1.6 - 0.8
    gated = lumos.compile(model, example_inputs=(x,))
    assert _pins(gated)["input"] is None and _pins(gated)["0"] is None, _pins(gated)
    assert lumos.report(gated).params_after == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha[[1, 4]] = -6.0
        lumos.gates(gated)["0"].log_alpha[:5] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("0.base").shape == (7, 4)
    assert pruned.get_buffer("0.constant").shape[0] == 4           # one row per kept feature
    assert sum(p.numel() for p in pruned.parameters()) == 7 * 4 * 9 + 2 * 7 * 9
    assert lumos.verify(gated, pruned, (torch.rand(5, 6) * 1.6 - 0.8,)) < 1e-5
