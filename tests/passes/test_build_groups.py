"""Which dim of an input is gated as its features."""
import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.capture import capture
from lumos_fx.passes.build_groups import feature_dim
from lumos_fx.passes.shape_prop import propagate_shapes


class Recurrent(nn.Module):
    def __init__(self, cls, batch_first: bool):
        super().__init__()
        self.rnn = cls(5, 12, batch_first=batch_first)
        self.head = nn.Linear(12, 1)
        self.batch_first = batch_first

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1] if self.batch_first else self.rnn(x)[0][-1])


class ChannelsLastSeries(nn.Module):
    """(batch, time, features) moved to (batch, features, time) for a Conv1d."""

    MOVES = {"permute": lambda x: x.permute(0, 2, 1),
             "transpose": lambda x: torch.relu(x).transpose(1, 2),
             "mT": lambda x: x.mT, "swapdims": lambda x: x.swapdims(2, 1)}

    def __init__(self, move: str):
        super().__init__()
        self.conv = nn.Conv1d(5, 8, 3, padding=1)
        self.head = nn.Linear(8, 1)
        self.move = move

    def forward(self, x):
        return self.head(self.conv(self.MOVES[self.move](x)).mean(-1))


class FlattenedRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 1)

    def forward(self, x):
        return self.fc(x.reshape(-1, x.shape[-1])).view(x.shape[0], -1)


class JoinedPoints(nn.Module):
    """A neural process encoder: context points (batch, points, features) joined with
    their values along the features, then read by a linear layer."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5 + 1, 8)

    def forward(self, x):
        return self.enc(torch.cat([x, x[..., :1].square()], -1)).mean(1)


def _dim(model, x):
    gm = capture(model, (x,))[False]
    propagate_shapes(gm, (x,))
    return feature_dim(next(n for n in gm.graph.nodes if n.op == "placeholder"))


@pytest.mark.parametrize("model,shape,dim", [
    (Recurrent(nn.LSTM, batch_first=True), (3, 7, 5), 2),
    (Recurrent(nn.GRU, batch_first=True), (3, 7, 5), 2),
    (ChannelsLastSeries("permute"), (3, 7, 5), 2),
    (ChannelsLastSeries("transpose"), (3, 7, 5), 2),
    (ChannelsLastSeries("mT"), (3, 7, 5), 2),
    (ChannelsLastSeries("swapdims"), (3, 7, 5), 2),
    (FlattenedRows(), (3, 7, 5), 2),
    (nn.Conv1d(7, 2, 1), (3, 7, 5), 1),
    (JoinedPoints(), (3, 7, 5), 2),
], ids=["lstm", "gru", "permute-conv", "transpose-conv", "mT-conv", "swapdims-conv",
        "reshape-linear", "conv", "cat-linear"])
def test_the_features_are_the_dim_the_first_reader_reads(model, shape, dim):
    assert _dim(model, torch.randn(*shape)) == dim


def test_a_recurrent_models_input_features_are_gated_and_dropped_exactly():
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM, batch_first=True).eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 7, 5),))
    assert lumos.gates(gated)["x"].log_alpha.numel() == 5
    with torch.no_grad():
        lumos.gates(gated)["x"].log_alpha[:2] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.lumos_kept_inputs == {"x": [2, 3, 4]}
    assert lumos.verify(gated, pruned, (torch.randn(2, 9, 5),)) < 1e-5


class ShapeOnlyRead(nn.Module):
    """BART's ``embed_positions(inputs_embeds[:, :, -1])``: a channel picked only for
    the shape of the tensor it gives; the exported graph keeps the unused ``select``."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.positions = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 2)

    def position_table(self, like):
        return self.positions(torch.arange(like.shape[1], device=like.device))

    def forward(self, x):
        h = self.embed(x)
        return self.head(torch.relu(h + self.position_table(h[:, :, -1])))


def test_a_tensor_read_only_for_its_shape_pins_nothing():
    torch.manual_seed(0)
    gated = lumos.compile(ShapeOnlyRead().eval(), example_inputs=(torch.randn(2, 7, 5),))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["embed"].pinned is None, groups["embed"].pinned
    with torch.no_grad():
        lumos.gates(gated)["embed"].log_alpha[-3:] = -8.0
    pruned = lumos.extract(gated)
    assert pruned.embed.weight.shape[0] == 5 and pruned.positions.weight.shape[1] == 5
    assert lumos.verify(gated, pruned, (torch.randn(3, 7, 5),)) < 1e-5
