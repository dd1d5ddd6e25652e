"""``with torch.no_grad():`` blocks are inlined: their channels stay prunable and
training computes what the model computes (buffers updated in place, no gradient
through the block)."""
import copy

import torch
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import randomize_gates


class RunningNormalizer(nn.Module):
    """Input features normalized by running statistics updated in training."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(5))
        self.register_buffer("var", torch.ones(5))
        self.a, self.b = nn.Linear(5, 16), nn.Linear(16, 1)

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.mean.mul_(0.9).add_(0.1 * x.mean(0))
                self.var.mul_(0.9).add_(0.1 * x.var(0))
        return self.b(torch.relu(self.a((x - self.mean) / (self.var + 1e-5).sqrt())))


class Teacher(nn.Module):
    """A target computed without gradients from the same input."""

    def __init__(self):
        super().__init__()
        self.a, self.teacher, self.b = nn.Linear(5, 16), nn.Linear(5, 16), nn.Linear(16, 1)

    def forward(self, x):
        with torch.no_grad():
            target = self.teacher(x)
        h = torch.relu(self.a(x))
        return self.b(h) + (h - target).pow(2).mean(1, keepdim=True)


def _open(gated):
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.fill_(60.0)          # every training sample is exactly 1


def test_a_running_normalizer_keeps_feature_selection_and_updates_its_buffers():
    torch.manual_seed(0)
    model = RunningNormalizer()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 5),))
    assert {g.name: g.pinned for g in lumos.report(gated).groups}["x"] is None
    reference = copy.deepcopy(model).train()
    _open(gated)
    gated.train()
    for _ in range(3):
        x = torch.randn(8, 5)
        torch.testing.assert_close(gated(x), reference(x))
    torch.testing.assert_close(gated.get_buffer("mean"), reference.mean)
    assert not gated.get_buffer("mean").requires_grad
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(6, 5),)) < 1e-5


def test_no_gradient_flows_through_a_no_grad_block():
    torch.manual_seed(0)
    model = Teacher()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 5),))
    assert all(g.pinned is None for g in lumos.report(gated).groups if g.name != "b")
    _open(gated)
    x = torch.randn(8, 5)
    gated.train()(x).sum().backward()
    model.train()(x).sum().backward()
    assert gated.get_parameter("teacher.weight").grad is None
    torch.testing.assert_close(gated.get_parameter("a.weight").grad, model.a.weight.grad)
    randomize_gates(gated, seed=2)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(6, 5),)) < 1e-5
