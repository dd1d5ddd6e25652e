"""Operators SciML models use: einsum contractions, FFTs, channel-splitting reshapes,
pixel shuffle. Hidden widths are gated and shrink exactly under random gates."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from tests.models.operators import AllocatingFNO1d, DeepONet, FNO1d, LSTMSurrogate
from tests.test_exactness_zoo import gate_widths, randomize_gates


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("make,inputs,hidden", [
    (FNO1d, lambda b: (torch.randn(b, 3, 32),), ("lift", "spectral.0", "spectral.1")),
    (DeepONet, lambda b: (torch.randn(b, 20), torch.randn(b, 2)), ("branch.2", "trunk.0")),
    (AllocatingFNO1d, lambda b: (torch.randn(b, 3, 32),), ("lift", "spectral.0", "spectral.1")),
])
def test_operator_models_gate_their_hidden_widths(make, inputs, hidden):
    torch.manual_seed(0)
    model = make().eval()
    gated = lumos.compile(model, example_inputs=inputs(4))
    assert set(hidden) <= set(lumos.gates(gated)), sorted(lumos.gates(gated))
    x = inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*x), model(*x))
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, inputs(7)) < 1e-5
    assert _params(pruned) < _params(model)


class Decoder(nn.Module):
    """A latent vector unflattened into feature maps: the inverse of a flatten."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 32 * 4 * 4)
        self.up = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.ps = nn.Conv2d(8, 4 * 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, z):
        h = torch.relu(self.fc(z)).view(-1, 32, 4, 4)
        h = torch.relu(self.up(h))
        return self.out(torch.pixel_shuffle(torch.relu(self.ps(h)), 2))


def test_a_reshape_that_splits_channels_and_pixel_shuffle_prune_in_blocks():
    gated = lumos.compile(Decoder(), example_inputs=(torch.randn(3, 16),))
    assert lumos.gates(gated)["fc"].log_alpha.numel() == 32      # a channel = 16 rows
    assert lumos.gates(gated)["ps"].log_alpha.numel() == 4       # a channel = 4 conv rows
    with torch.no_grad():
        lumos.gates(gated)["fc"].log_alpha[:5] = -6.0
        lumos.gates(gated)["ps"].log_alpha[1] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.fc.weight.shape == (27 * 16, 16) and pruned.ps.weight.shape[0] == 12
    assert lumos.verify(gated, pruned, (torch.randn(5, 16),)) < 1e-5


def test_fft_over_a_channel_dim_pins():
    class ChannelFFT(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 8), nn.Linear(5, 1)

        def forward(self, x):
            return self.head(torch.fft.rfft(self.fc(x)).abs())

    gated = lumos.compile(ChannelFFT(), example_inputs=(torch.randn(3, 4),))
    assert "fc" not in lumos.gates(gated)
    pins = [g.pinned for g in lumos.report(gated).groups if g.name == "fc"]
    assert pins and "Fourier transform over a channel dim" in pins[0]


class Recurrent(nn.Module):
    def __init__(self, cls, **options):
        super().__init__()
        self.rnn = cls(6, 12, batch_first=True, **options)
        self.head = nn.Linear(12 * (2 if options.get("bidirectional") else 1), 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("make", [
    pytest.param(lambda: LSTMSurrogate(), id="lstm-surrogate"),
    pytest.param(lambda: Recurrent(nn.LSTM, num_layers=2, bidirectional=True), id="lstm-2-layers-bi"),
    pytest.param(lambda: Recurrent(nn.GRU), id="gru"),
    pytest.param(lambda: Recurrent(nn.RNN, num_layers=2), id="rnn"),
])
def test_recurrent_hidden_size_is_one_group_and_shrinks_exactly(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(4, 7, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    hidden = "lstm" if isinstance(model, LSTMSurrogate) else "rnn"
    assert lumos.gates(gated)[hidden].log_alpha.numel() == (32 if hidden == "lstm" else 12)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        lumos.gates(gated)[hidden].log_alpha[:5] = -6.0
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(3, 9, 6),)) < 1e-5
    assert _params(pruned) < _params(model)


class AddmmMLP(nn.Module):
    """Weights stored (in, out) and applied with addmm, as Hugging Face's Conv1D does,
    over a (batch, time, features) input flattened to rows."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(6, 24) / 3), nn.Parameter(torch.randn(24))
        self.w2, self.b2 = nn.Parameter(torch.randn(24, 3) / 5), nn.Parameter(torch.randn(3))

    def forward(self, x):
        rows = x.reshape(-1, x.shape[-1])
        h = torch.relu(torch.addmm(self.b1, rows, self.w1))
        return torch.addmm(self.b2, h, self.w2).view(*x.shape[:-1], 3)


def test_addmm_with_weights_prunes_its_hidden_and_inputs_exactly():
    torch.manual_seed(0)
    model = AddmmMLP()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 5, 6),))
    assert gate_widths(gated) == {"x": 6, "w1": 24}
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.w1.shape == (3, 12) and pruned.b1.shape == (12,) and pruned.w2.shape == (12, 3)
    assert lumos.verify(gated, pruned, (torch.randn(2, 7, 6),)) < 1e-5


class SpectralFirst(nn.Module):
    """An FNO layer whose complex spectral weight is the model's first parameter."""

    def __init__(self, c: int = 4, modes: int = 4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(c, c, modes, dtype=torch.cfloat) / c)
        self.lift, self.proj = nn.Conv1d(2, c, 1), nn.Conv1d(c, 1, 1)
        self.modes = modes

    def forward(self, x):
        h = self.lift(x)
        spectrum = torch.fft.rfft(h)
        out = torch.zeros(h.shape[0], h.shape[1], h.shape[-1] // 2 + 1, dtype=torch.cfloat)
        out[..., :self.modes] = torch.einsum("bix,iox->box", spectrum[..., :self.modes], self.w)
        return self.proj(torch.relu(torch.fft.irfft(out, n=h.shape[-1]) + h))


def test_a_complex_first_parameter_leaves_the_checks_real_inputs_real():
    torch.manual_seed(0)
    gated = lumos.compile(SpectralFirst().eval(), example_inputs=(torch.randn(3, 2, 32),))
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha[:1] = -10.0
    pruned = lumos.extract(gated)                  # verifies on the example inputs
    assert lumos.verify(gated, pruned, (torch.randn(2, 2, 32),)) < 1e-5


class TransposedWeights(nn.Module):
    """Weights applied as ``x @ w.t()``, ``x @ w.T``, ``x @ w.mT`` and through ``permute``
    (PyG's AttentiveFP scores edges with ``x @ att.t()``)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(24, 6) / 3)
        self.w2 = nn.Parameter(torch.randn(16, 24) / 5)
        self.w3 = nn.Parameter(torch.randn(16, 24) / 5)
        self.w4 = nn.Parameter(torch.randn(2, 16) / 4)

    def forward(self, x):
        h = torch.relu(x @ self.w1.t())
        h = torch.tanh(h @ self.w2.permute(1, 0)) + h @ self.w3.T
        return h @ self.w4.mT


def test_a_transposed_weight_is_sliced_like_a_linear_layer():
    torch.manual_seed(0)
    model = TransposedWeights()
    x = torch.randn(5, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    widths = gate_widths(gated)
    assert widths == {"x": 6, "w1": 24, "w2": 16}        # w3 joins w2's group by the sum
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        for gate in lumos.gates(gated).values():
            gate.log_alpha[1::2] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.w1.shape == (12, 3) and pruned.w2.shape == (8, 12)
    assert pruned.w3.shape == (8, 12) and pruned.w4.shape == (2, 8)
    assert lumos.verify(gated, pruned, (torch.randn(9, 6),)) < 1e-5


class StackedWeights(nn.Module):
    """``K`` weights applied at once by a broadcast ``x.unsqueeze(0) @ w`` and one picked
    from a stack (``w[1]``), averaged over the stacks (ARMA's parallel stacks)."""

    def __init__(self, stacks: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.randn(stacks, 6, 16) / 3)
        self.root = nn.Parameter(torch.randn(stacks, 6, 16) / 3)
        self.bias = nn.Parameter(torch.randn(stacks, 1, 16))
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(x.unsqueeze(0) @ self.w + x @ self.root[1] + self.bias)
        return self.head(h.mean(0))


def test_broadcast_and_selected_stacked_weights_are_sliced_exactly():
    torch.manual_seed(0)
    model = StackedWeights()
    x = torch.randn(5, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    assert gate_widths(gated) == {"x": 6, "w": 16}
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.w.shape == pruned.root.shape == (3, 3, 8) and pruned.bias.shape == (3, 1, 8)
    assert lumos.verify(gated, pruned, (torch.randn(9, 6),)) < 1e-5


class AddedScores(nn.Module):
    """Attention scores as ``baddbmm(bias, q, k^T)`` (BLOOM adds its ALiBi bias so)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(6, 8)
        self.bias = nn.Parameter(torch.randn(5, 5))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        scores = torch.baddbmm(self.bias.expand(x.shape[0], -1, -1), self.q(x),
                               self.k(x).transpose(1, 2), alpha=0.3)
        return self.head(torch.softmax(scores, -1) @ self.v(x))


def test_baddbmm_gates_the_width_it_contracts():
    torch.manual_seed(0)
    model = AddedScores()
    x = torch.randn(3, 5, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    assert gate_widths(gated) == {
        "x": 6, "q": 8, "v": 8}                         # k joins q's group by the product
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::2] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.q.weight.shape == pruned.k.weight.shape == (4, 3)
    assert lumos.verify(gated, pruned, (torch.randn(2, 5, 6),)) < 1e-5


COMPOSITES = {     # ops torch.export keeps whole, on a hidden layer's channels
    "mT": lambda m, h: m.out(h[:, :, None].mT.squeeze(1)),
    "tile": lambda m, h: m.wide(h.tile(1, 2)),
    "hstack": lambda m, h: m.wide(torch.hstack([h, torch.tanh(h)])),
    "cosine_similarity": lambda m, h: m.out(h) * nn.functional.cosine_similarity(
        h, torch.tanh(h), dim=1)[:, None],
    "linalg_cross": lambda m, h: m.out(torch.linalg.cross(
        h[:, :, None] * m.axis, torch.tanh(h)[:, :, None] * m.axis.flip(-1)).sum(-1)),
    "triu": lambda m, h: m.out(torch.triu(h[:, :, None, None] * m.axis, diagonal=1).sum((2, 3))),
    "complex": lambda m, h: m.out(torch.complex(h, 2 * h).real + torch.polar(h.abs(), h).imag),
}


class Composite(nn.Module):
    def __init__(self, op: str):
        super().__init__()
        self.op, self.hidden = op, nn.Linear(4, 16)
        self.out, self.wide = nn.Linear(16, 2), nn.Linear(32, 2)
        self.register_buffer("axis", torch.tensor([1.0, 2.0, 3.0]))

    def forward(self, x):
        return COMPOSITES[self.op](self, torch.tanh(self.hidden(x)))


@pytest.mark.parametrize("op", list(COMPOSITES))
def test_composite_ops_export_keeps_leave_hidden_channels_prunable(op):
    torch.manual_seed(0)
    gated = lumos.compile(Composite(op).eval(), example_inputs=(torch.randn(3, 4),))
    assert {g.name: g.pinned for g in lumos.report(gated).groups}["hidden"] is None
    with torch.no_grad():
        lumos.gates(gated)["hidden"].log_alpha[[2, 7, 11]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.hidden.weight.shape == (13, 4)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-5


class VectorProducts(nn.Module):
    """One sample at a time: ``mv`` of stored matrices and a ``dot`` readout."""

    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(16, 4)), nn.Parameter(torch.randn(8, 16))
        self.v = nn.Parameter(torch.randn(8))

    def forward(self, x):
        return torch.dot(torch.tanh(torch.mv(self.w2, torch.tanh(torch.mv(self.w1, x)))), self.v)


def test_mv_and_dot_are_contractions():
    torch.manual_seed(0)
    gated = lumos.compile(VectorProducts(), example_inputs=(torch.randn(4),),
                          dynamic_shapes=(None,))
    assert gate_widths(gated) == {"w1": 16, "w2": 8}
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert pruned.w1.shape[0] < 16 and pruned.w2.shape == (pruned.v.shape[0], pruned.w1.shape[0])
    assert lumos.verify(gated, pruned, (torch.randn(4),)) < 1e-5


class BilinearInteraction(nn.Module):
    """``nn.Bilinear`` of two embeddings (pairwise feature interactions), or the same
    written as an einsum (DimeNet's bilinear layer) over inputs of equal width: one
    weight gated along two dims."""

    def __init__(self, written: str):
        super().__init__()
        width = 6 if written == "module" else 8
        self.written, self.a, self.b = written, nn.Linear(4, 8), nn.Linear(3, width)
        self.bil, self.out = nn.Bilinear(8, width, 10), nn.Linear(10, 1)

    def forward(self, x, y):
        h, g = torch.tanh(self.a(x)), torch.tanh(self.b(y))
        if self.written == "module":
            z = self.bil(h, g)
        else:
            z = torch.einsum("bi,bj,oij->bo", h, g, self.bil.weight) + self.bil.bias
        return self.out(torch.tanh(z))


@pytest.mark.parametrize("written", ["module", "einsum"])
def test_bilinear_gates_both_inputs_and_creates_its_outputs(written):
    torch.manual_seed(0)
    model = BilinearInteraction(written).eval()
    inputs = (torch.randn(3, 4), torch.randn(3, 3))
    gated = lumos.compile(model, example_inputs=inputs)
    assert {"a", "b"} <= set(gate_widths(gated))       # two groups: nothing joins them
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert pruned.bil.weight.shape == (pruned.bil.bias.shape[0], pruned.a.weight.shape[0],
                                       pruned.b.weight.shape[0])
    assert _params(pruned) < _params(model)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4), torch.randn(5, 3))) < 1e-5
