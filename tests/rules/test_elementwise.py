"""Activations and gating products: every one keeps channels where they are (torch does
not tag all of them pointwise), ``glu`` ties the two halves it multiplies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import gate_widths, randomize_gates


class SqueezeExcite(nn.Module):
    """A MobileNetV3 block: hardswish, depthwise conv, a hardsigmoid squeeze-excite."""

    def __init__(self, act):
        super().__init__()
        self.exp, self.dw = nn.Conv2d(8, 24, 1), nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.fc1, self.fc2 = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.proj, self.head = nn.Conv2d(24, 8, 1), nn.Linear(8, 2)
        self.act = act

    def forward(self, x):
        h = self.act(self.dw(self.act(self.exp(x))))
        h = h * F.hardsigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return self.head((x + self.proj(h)).mean((2, 3)))


@pytest.mark.parametrize("act", [nn.Hardswish(), nn.Hardswish(inplace=True), nn.Mish(inplace=True),
                                 nn.ReLU6(inplace=True), nn.GELU(), nn.LogSigmoid(),
                                 nn.Threshold(0.1, 0.0, inplace=True)],
                         ids=lambda a: repr(a))
def test_activations_keep_their_channels_and_shrink_exactly(act):
    torch.manual_seed(0)
    model = SqueezeExcite(act).eval()
    x = torch.randn(2, 8, 6, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    assert {"exp", "fc1"} <= set(lumos.gates(gated)), lumos.report(gated)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert pruned.exp.weight.shape[0] < 24
    assert lumos.verify(gated, pruned, (torch.randn(3, 8, 6, 6),)) < 1e-5


class GatedLinearUnit(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.conv, self.head = nn.Linear(6, 16), nn.Conv1d(8, 12, 3), nn.Linear(6, 2)

    def forward(self, x):
        h = F.glu(self.fc(x))                           # (B, L, 8)
        return self.head(F.glu(self.conv(h.transpose(1, 2)), dim=1).mean(-1))


def test_glu_ties_the_two_halves_it_multiplies():
    torch.manual_seed(0)
    model = GatedLinearUnit()
    x = torch.randn(3, 9, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    widths = gate_widths(gated)
    assert widths == {"x": 6, "fc": 8, "conv": 6}
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        lumos.gates(gated)["fc"].log_alpha[[1, 4]] = -10.0
        lumos.gates(gated)["conv"].log_alpha[0] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape == (12, 6) and pruned.conv.weight.shape == (10, 6, 3)
    assert lumos.verify(gated, pruned, (torch.randn(2, 11, 6),)) < 1e-5


class OffsetScale(nn.Module):
    """Gemma's RMSNorm scales by ``1 + w`` (computed from the parameter with a scalar)."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(6, 8), nn.Linear(8, 2)
        self.w = nn.Parameter(torch.randn(8) / 4)

    def forward(self, x):
        h = self.fc(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + self.w.float())
        return self.head(h)


def test_a_parameter_offset_by_a_scalar_follows_the_channels_it_scales():
    torch.manual_seed(0)
    model = OffsetScale()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 6),))
    assert gate_widths(gated) == {"x": 6, "fc": 8}
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[[2, 6]] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.w.shape == (6,)
    assert lumos.verify(gated, pruned, (torch.randn(5, 6),)) < 1e-5


class FeatureTokenizer(nn.Module):
    """FT-Transformer's numerical tokenizer: feature ``i`` becomes the token
    ``x[:, i] * W[i] + b[i]``; ``W`` is labeled by the features along dim 0 and by the
    token width along dim 1 in the same op."""

    def __init__(self, features: int = 5, width: int = 8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, width))
        self.bias = nn.Parameter(torch.randn(features, width))
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        tokens = x.unsqueeze(-1) * self.weight + self.bias
        return self.head(torch.relu(self.mix(tokens)).mean(1))


def test_a_parameter_labeled_along_two_dims_by_one_op_prunes_both():
    torch.manual_seed(0)
    model = FeatureTokenizer()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 5),))
    assert gate_widths(gated) == {"x": 5, "weight": 8, "mix": 8}, gate_widths(gated)
    with torch.no_grad():
        lumos.gates(gated)["x"].log_alpha[[0, 3]] = -10.0
        lumos.gates(gated)["weight"].log_alpha[[1, 2, 5]] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.weight.shape == pruned.bias.shape == (3, 5)
    assert pruned.mix.weight.shape == (8, 5)
    assert lumos.verify(gated, pruned, (torch.randn(6, 5),)) < 1e-5
