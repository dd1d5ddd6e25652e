"""Producer/consumer rules for layers with weights."""
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(6))
        self.w2 = nn.Parameter(torch.randn(2, 6))

    def forward(self, x):
        return F.linear(torch.tanh(F.linear(x, self.w1, self.b1)), self.w2)


def test_functional_linear_with_parameters_is_pruned_exactly():
    gated = lumos.compile(Functional(), example_inputs=(torch.randn(3, 4),))
    with torch.no_grad():
        lumos.gates(gated)["w1"].log_alpha[[1, 4]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.w1.shape == (4, 4) and pruned.w2.shape == (2, 4)
    assert lumos.verify(gated, pruned, (torch.randn(5, 4),)) < 1e-6


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 4, 1, groups=2)

    def forward(self, x):
        return self.grouped(F.relu(self.dw(self.pw(x))))


def test_depthwise_follows_its_input_and_grouped_conv_prunes_equal_groups():
    gated = lumos.compile(Depthwise(), example_inputs=(torch.randn(2, 3, 6, 6),))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["pw"].pinned is None and groups["pw"].total == 4     # 8 channels, 2 groups
    assert "dw" in groups["pw"].followers
    with torch.no_grad():
        lumos.gates(gated)["pw"].log_alpha[[0, 2]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.pw.weight.shape[0] == 4 and pruned.grouped.weight.shape == (4, 2, 1, 1)
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 6, 6),)) < 1e-6


class DepthwiseFree(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(F.relu(self.dw(self.pw(x))))


def test_depthwise_conv_shrinks_with_its_channels():
    gated = lumos.compile(DepthwiseFree(), example_inputs=(torch.randn(2, 3, 6, 6),))
    with torch.no_grad():
        lumos.gates(gated)["pw"].log_alpha[:3] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.dw.weight.shape[0] == 5 and "[1, 1], [1, 1], [1, 1], 5)" in pruned.code
    assert lumos.verify(gated, pruned, (torch.randn(4, 3, 6, 6),)) < 1e-6


def test_shared_module_called_twice_prunes_consistently():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 5)
            self.shared = nn.Linear(5, 5)
            self.out = nn.Linear(5, 1)

        def forward(self, x):
            h = torch.relu(self.inp(x))
            return self.out(self.shared(torch.relu(self.shared(h))))

    torch.manual_seed(1)
    gated = lumos.compile(Shared(), example_inputs=(torch.randn(2, 3),))
    for gate in lumos.gates(gated).values():
        with torch.no_grad():
            gate.log_alpha.uniform_(-6, 6)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(4, 3),)) < 1e-6


def test_grouped_transposed_conv_pins_and_extracts():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), nn.ReLU(),
                          nn.Conv2d(6, 3, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 2, 4, 4),))
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::2] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_submodule("2").weight.shape[1] == 3
    assert lumos.verify(gated, pruned, (torch.randn(3, 2, 4, 4),)) < 1e-6


def test_padding_the_channel_dim_pins_it_and_stays_exact():
    class PadChannels(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 4, 3, padding=1)
            self.b = nn.Conv2d(6, 3, 1)

        def forward(self, x):
            return self.b(torch.nn.functional.pad(torch.relu(self.a(x)), (0, 0, 0, 0, 1, 1)))

    gated = lumos.compile(PadChannels(), example_inputs=(torch.randn(2, 2, 5, 5),))
    assert "a" not in lumos.gates(gated)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(3, 2, 5, 5),)) < 1e-6


class TiedLanguageModel(nn.Module):
    """An embedding table tied to the output layer, which has its own bias (BERT's
    masked-LM head): the table's columns are the hidden channels, its rows the vocabulary."""

    def __init__(self, hidden: int = 16, vocab: int = 40):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.up, self.down = nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.decoder = nn.Linear(hidden, vocab)
        self.decoder.weight = self.embed.weight

    def forward(self, ids):
        h = self.embed(ids)
        return self.decoder(self.norm(h + self.down(torch.relu(self.up(h)))))


def test_tied_embedding_and_decoder_keep_rows_and_columns_apart():
    torch.manual_seed(0)
    model = TiedLanguageModel().eval()
    ids = torch.randint(0, 40, (3, 5))
    gated = lumos.compile(model, example_inputs=(ids,))
    gates = lumos.gates(gated)
    assert gates["up"].log_alpha.numel() == 32              # the MLP's hidden is prunable
    assert gates["embed"].log_alpha.numel() == 16           # the residual stream, not pinned
    with torch.no_grad():
        gates["up"].log_alpha[:6] = -10.0
        gates["embed"].log_alpha[:3] = -10.0
        gates["embed"].log_alpha[3:6] = 0.0     # open, at a value below 1: not folded into
        # the tied table, which the embedding also reads
    pruned = lumos.extract(gated)
    assert pruned.decoder.bias.shape == (40,)
    assert lumos.verify(gated, pruned, (torch.randint(0, 40, (2, 7)),)) < 1e-5


class ReshapedWeights(nn.Module):
    """Weights handed to their op through views that keep every dim in place (Mamba's
    reference causal conv: ``w.squeeze(1).unsqueeze(1)``; a copy before a linear), and a
    weight reparametrised by ``tanh``, which extraction stores as computed."""

    def __init__(self):
        super().__init__()
        self.pw = nn.Conv1d(3, 8, 1)
        self.dw = nn.Conv1d(8, 8, 4, padding=3, groups=8)
        self.fc = nn.Linear(8, 6)
        self.w = nn.Parameter(torch.randn(2, 6))

    def forward(self, x):
        h = F.silu(self.pw(x))
        weight = self.dw.weight.squeeze(1).unsqueeze(1)
        h = F.conv1d(h, weight, self.dw.bias, padding=3, groups=8)[..., :x.shape[-1]]
        h = F.linear(h.mean(-1), self.fc.weight.contiguous(), self.fc.bias.clone())
        return F.linear(torch.relu(h), torch.tanh(self.w))


def test_weights_through_views_in_place_and_a_reparametrised_one_are_pruned():
    torch.manual_seed(0)
    model = ReshapedWeights()
    x = torch.randn(2, 3, 10)
    gated = lumos.compile(model, example_inputs=(x,))
    assert "pw" in lumos.gates(gated) and "fc" in lumos.gates(gated)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        lumos.gates(gated)["pw"].log_alpha[[0, 3, 5]] = -10.0
        lumos.gates(gated)["fc"].log_alpha[[1, 2]] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.dw.weight.shape == (5, 1, 4) and pruned.fc.weight.shape == (4, 5)
    assert pruned.get_parameter("weight").shape == (2, 4)        # tanh(w), stored
    assert lumos.verify(gated, pruned, (torch.randn(3, 3, 10),)) < 1e-5
