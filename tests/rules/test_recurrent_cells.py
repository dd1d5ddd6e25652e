"""One-step recurrent cells (``nn.GRUCell``, ``nn.LSTMCell``, ``nn.RNNCell``): the hidden
size is a group that joins the state the model passes in, and shrinks exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import gate_widths, randomize_gates


class CellStack(nn.Module):
    """A GRU cell stepped twice from a state the model computes, an LSTM cell started
    from its own zero state and then from its output, an RNN cell, a linear head."""

    def __init__(self):
        super().__init__()
        self.inp, self.state = nn.Linear(6, 16), nn.Linear(6, 12)
        self.gru = nn.GRUCell(16, 12)
        self.lstm = nn.LSTMCell(12, 10)
        self.rnn = nn.RNNCell(10, 9, nonlinearity="relu")
        self.head = nn.Linear(9, 2)

    def forward(self, x):
        a, h = torch.relu(self.inp(x)), torch.tanh(self.state(x))
        for _ in range(2):
            h = self.gru(a, h)
        state = self.lstm(h)
        h, c = self.lstm(h, state)
        return self.head(self.rnn(h + c))


def test_cells_gate_their_hidden_sizes_and_the_states_they_read():
    torch.manual_seed(0)
    model = CellStack()
    x = torch.randn(5, 6)
    gated = lumos.compile(model, example_inputs=(x,))
    widths = gate_widths(gated)
    # the computed state joins the GRU's hidden group: one gate for both
    assert widths == {"x": 6, "inp": 16, "state": 12, "lstm": 10, "rnn": 9}
    with torch.no_grad():                      # open for good: train mode samples 1 too
        for gate in lumos.gates(gated).values():
            gate.log_alpha.fill_(100.0)
    for mode in (False, True):
        gated.train(mode), model.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(gated(x), model(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cells_shrink_exactly_under_random_gates(seed):
    torch.manual_seed(seed)
    model = CellStack().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(5, 6),))
    randomize_gates(gated, seed=seed, close_whole=0.0)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(7, 6),)) < 1e-5
    kept = {k: int((g.deterministic() > 0).sum()) for k, g in lumos.gates(gated).items()}
    assert pruned.gru.weight_ih.shape == (3 * kept["state"], kept["inp"])
    assert pruned.lstm.weight_hh.shape == (4 * kept["lstm"], kept["lstm"])
    assert pruned.rnn.bias_hh.shape == (kept["rnn"],)


def test_a_trained_cell_model_extracts_exactly():
    torch.manual_seed(0)
    model = CellStack()
    x, y = torch.randn(64, 6), torch.randn(64, 2)
    gated = lumos.compile(model, example_inputs=(x[:4],), lam=2.0)
    opt = torch.optim.Adam(lumos.param_groups(gated, 1e-2))
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.mse_loss(gated(x), y) + lumos.penalty(gated)
        loss.backward()
        opt.step()
    pruned = lumos.extract(gated.eval())
    assert sum(p.numel() for p in pruned.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    assert lumos.verify(gated, pruned, (torch.randn(9, 6),)) < 1e-5


def test_a_cell_whose_weight_is_computed_pins_its_inputs():
    class ScaledCell(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.cell, self.head = nn.Linear(4, 8), nn.GRUCell(8, 6), nn.Linear(6, 1)

        def forward(self, x):
            h = torch.relu(self.fc(x))
            out = torch.ops.aten.gru_cell(h, torch.zeros(x.shape[0], 6), self.cell.weight_ih * 2,
                                          self.cell.weight_hh, self.cell.bias_ih, self.cell.bias_hh)
            return self.head(out)

    gated = lumos.compile(ScaledCell(), example_inputs=(torch.randn(3, 4),))
    pins = {g.name: g.pinned for g in lumos.report(gated).groups}
    assert "computed weights" in pins["fc"]
