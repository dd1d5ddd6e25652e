"""compile looks through the wrappers users put around their models."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lumos_fx as lumos


class ForwardsEverything(nn.Module):
    """A wrapper whose ``forward(*args, **kwargs)`` hands every argument on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel, ForwardsEverything])
def test_wrapped_models_compile_the_model_inside_and_are_left_alone(wrap):
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    wrapped = wrap(inner)
    before = copy.deepcopy(inner.state_dict())
    gated = lumos.compile(wrapped, example_inputs=(torch.randn(4, 6),))
    x = torch.randn(5, 6)
    torch.testing.assert_close(gated.eval()(x), inner(x))
    hidden = next(name for name in lumos.gates(gated) if name.split(".")[-1] == "0")
    with torch.no_grad():
        lumos.gates(gated)[hidden].log_alpha[:9] = -10.0
    assert lumos.verify(gated, lumos.extract(gated), (x,)) < 1e-5
    assert all(torch.equal(v, inner.state_dict()[k]) for k, v in before.items())
