"""Readable errors for models lumos_fx cannot compile and for bad example inputs.

In every case the user's model must be left exactly as it was.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import lumos_fx as lumos


class DataDependentIf(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 8)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class UsesLen(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 8)

    def forward(self, x):
        n = len(x)
        return self.fc(x) / n


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert "forward" not in model.__dict__


def test_error_hierarchy():
    assert issubclass(lumos.TraceError, lumos.LumosError)
    assert issubclass(lumos.InputError, lumos.LumosError)
    assert issubclass(lumos.LumosError, Exception)


def test_data_dependent_if_names_the_line():
    model = DataDependentIf()
    before = _state(model)
    with pytest.raises(lumos.TraceError) as info:
        lumos.compile(model, example_inputs=(torch.randn(4, 20),))
    assert "if x.sum() > 0" in str(info.value), str(info.value)
    _assert_unchanged(model, before)


class LayerDrop(nn.Module):
    """Hugging Face's LayerDrop: a layer skipped at random while training."""

    def __init__(self, layerdrop: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(20, 20), nn.Linear(20, 20)])
        self.layerdrop = layerdrop

    def forward(self, x):
        for layer in self.layers:
            skip_the_layer = False
            if self.training and self.layerdrop > 0.0:
                skip_the_layer = torch.rand([]) < self.layerdrop
            if not skip_the_layer:
                x = x + torch.relu(layer(x))
        return x


def test_a_layer_skipped_at_random_names_layerdrop_and_its_switch():
    with pytest.raises(lumos.TraceError) as info:
        lumos.compile(LayerDrop().train(), example_inputs=(torch.randn(4, 20),))
    message = str(info.value)
    assert "LayerDrop" in message and "if not skip_the_layer" in message
    assert "layerdrop = 0.0" in message
    model = LayerDrop(layerdrop=0.0).train()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 20),))      # the switch works
    x = torch.randn(3, 20)
    torch.testing.assert_close(gated.eval()(x), model.eval()(x))


def test_a_batch_size_baked_into_a_constant_is_an_error_naming_the_line():
    """``len(x)`` makes torch.export record the example's batch size as a constant; the
    gated model would silently divide by 4 at every batch size, so compile refuses."""
    model = UsesLen()
    before = _state(model)
    with pytest.raises(lumos.TraceError) as info:
        lumos.compile(model, example_inputs=(torch.randn(4, 20),))
    assert "constant 4" in str(info.value) and "/ n" in str(info.value), str(info.value)
    _assert_unchanged(model, before)


class ClassTokenFromLen(nn.Module):
    """A stride equal to the batch size must not be taken for the batch constant."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 4, stride=4)
        self.token = nn.Parameter(torch.zeros(1, 1, 8))

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.token.expand(len(x), -1, -1), tokens], 1).mean(1)


def test_the_named_line_is_the_one_that_uses_the_batch_as_a_size():
    with pytest.raises(lumos.TraceError) as info:
        lumos.compile(ClassTokenFromLen(), example_inputs=(torch.randn(4, 1, 8, 8),))
    assert "self.token.expand(len(x), -1, -1)" in str(info.value), str(info.value)


def test_wrong_example_shape_mentions_shape():
    model = Plain()
    before = _state(model)
    with pytest.raises(lumos.LumosError) as info:
        lumos.compile(model, example_inputs=(torch.randn(4, 7),))
    msg = str(info.value)
    assert re.search(r"4,\s*7", msg), msg
    _assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [
    pytest.param(("not a tensor",), id="string"),
    pytest.param(([[0.0] * 20] * 4,), id="nested-list"),
    pytest.param(5, id="int"),
], )
def test_example_inputs_not_tensors(bad):
    model = Plain()
    before = _state(model)
    with pytest.raises(lumos.LumosError) as info:
        lumos.compile(model, example_inputs=bad)
    msg = str(info.value)
    assert "example_inputs" in msg or "tensor" in msg.lower(), msg
    _assert_unchanged(model, before)


def test_missing_example_inputs_is_inferred_or_explained():
    """DESIGN.md: example_inputs may be optional where shapes can be inferred;
    when needed and missing, the error says so."""
    model = Plain()
    before = _state(model)
    try:
        gated = lumos.compile(model, example_inputs=None)
    except lumos.LumosError as err:
        assert "example_inputs" in str(err), str(err)
    else:
        x = torch.randn(3, 20)
        torch.testing.assert_close(gated.eval()(x), model.eval()(x))
    _assert_unchanged(model, before)


def test_compile_keeps_a_private_copy_of_the_example_inputs():
    data = torch.randn(100, 20)
    gated = lumos.compile(nn.Sequential(nn.Linear(20, 4)), example_inputs=(data[:8],))
    kept = gated.lumos_state.example_inputs[0]
    data.zero_()
    assert kept.abs().sum() > 0 and kept.shape == (8, 20)
    assert kept.untyped_storage().nbytes() == 8 * 20 * 4


def test_a_failing_example_input_names_the_ops_own_error():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    with pytest.raises(lumos.InputError, match="IndexError: index out of range") as info:
        lumos.compile(model, example_inputs=(torch.tensor([[1, 2, 12]]),))
    assert "nn_module_stack" not in str(info.value)       # not the node's whole meta


class NeedsFiveRows(nn.Module):
    """``arange(n - 3)`` holds for n >= 3 only (torch.export guards it as n >= 5)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 20)

    def forward(self, x):
        return self.lin(x) * torch.arange(x.shape[0] - 3).sum()


def test_a_named_dim_wider_than_the_code_allows_quotes_the_suggested_range():
    dims = ({0: torch.export.Dim("rows")},)
    with pytest.raises(lumos.TraceError) as info:
        lumos.compile(NeedsFiveRows(), example_inputs=(torch.randn(6, 20),), dynamic_shapes=dims)
    message = str(info.value)
    assert "part of the range" in message and "Dim('rows', min=5)" in message, message
    assert "constant" not in message.split("Original error")[0]
    auto = ({0: torch.export.Dim.AUTO},)
    lumos.compile(NeedsFiveRows(), example_inputs=(torch.randn(6, 20),), dynamic_shapes=auto)
