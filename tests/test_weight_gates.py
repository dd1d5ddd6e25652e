"""Convolutions gated on the weight instead of the input (lumos_fx.weight_gates)."""
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.weight_gates import WeightGatedConv2d


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        h = self.shared(torch.relu(self.shared(h)))
        return self.head(h.mean((2, 3)))


def _gated():
    torch.manual_seed(0)
    model = Net()
    return model, lumos.compile(model, example_inputs=(torch.randn(2, 3, 6, 6),))


def test_single_use_convs_gate_their_weight_and_keep_their_keys():
    model, gated = _gated()
    assert type(gated.a) is WeightGatedConv2d and type(gated.b) is WeightGatedConv2d
    assert type(gated.shared) is nn.Conv2d          # called twice: gated on its input
    assert type(model.b) is nn.Conv2d               # the user's model is untouched
    keys = {k for k in gated.state_dict() if not k.startswith("lumos_")}
    assert keys == set(model.state_dict())


def test_weight_gating_computes_the_input_gated_convolution():
    _, gated = _gated()
    x, z = torch.randn(4, 3, 6, 6), torch.tensor([0.3, 0.0, 1.0])
    reference = nn.Conv2d.forward(gated.a, x * z.view(1, -1, 1, 1))   # reflect padding too
    torch.testing.assert_close(gated.a(x, z), reference)


def test_extraction_restores_plain_convolutions_and_is_exact():
    _, gated = _gated()
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::3] = -6.0
    pruned = lumos.extract(gated.eval())
    assert type(pruned.a) is nn.Conv2d and type(pruned.b) is nn.Conv2d
    assert pruned.b.in_channels < 8
    assert lumos.verify(gated, pruned, (torch.randn(5, 3, 6, 6),)) < 1e-6
    assert type(gated.b) is WeightGatedConv2d       # extraction leaves the gated model alone
