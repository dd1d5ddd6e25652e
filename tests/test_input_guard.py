"""Sizes the captured graph holds as constants are checked at every call."""
import copy
import io

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.errors import InputError
from lumos_fx.input_guard import InputShapes


class MeanOverTime(nn.Module):
    """A conv net over (batch, channels, length) that divides by the length it sees."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.conv(x).relu()
        return self.head(h.sum(-1) / h.shape[-1])


class LastStep(nn.Module):
    def __init__(self, mean: bool = False):
        super().__init__()
        self.rnn = nn.GRU(6, 12, batch_first=True)
        self.head = nn.Linear(12, 2)
        self.mean = mean

    def forward(self, x):
        h = self.rnn(x)[0]
        return self.head(h.sum(1) / h.shape[1] if self.mean else h[:, -1])


def _close_some(gated):
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha[::3] = -10.0


def test_a_length_the_graph_computes_with_is_refused_not_silently_wrong():
    torch.manual_seed(0)
    model = MeanOverTime().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 4, 32),)).eval()
    _close_some(gated)
    pruned = lumos.extract(gated)
    for m in (gated, pruned):
        assert m(torch.randn(9, 4, 32)).shape == (9, 1)       # the batch stays free
        with pytest.raises(InputError, match=r"input 'x' has size 64 in dim 2.*dynamic_shapes="
                                             r"\(\{0: Dim.AUTO, 2: Dim.DYNAMIC\},\)"):
            m(torch.randn(4, 4, 64))
        with pytest.raises(InputError, match="has 2 dims"):
            m(torch.randn(4, 4))


def test_marking_the_length_dynamic_makes_it_free_and_exact():
    torch.manual_seed(0)
    model = MeanOverTime().eval()
    dim = torch.export.Dim.AUTO
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 4, 32),),
                          dynamic_shapes=({0: dim, 2: dim},)).eval()
    x = torch.randn(3, 4, 64)
    torch.testing.assert_close(gated(x), model(x))
    _close_some(gated)
    assert lumos.verify(gated, lumos.extract(gated), (x,)) < 1e-5


def test_a_time_dim_only_a_kernel_fixed_stays_free():
    """aten.gru's fake kernel fixes the time dim; the graph is still generic in it."""
    torch.manual_seed(0)
    model = LastStep().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 7, 6),))
    assert gated.input_shapes.shapes == ((None, None, 6),)
    x = torch.randn(3, 11, 6)
    torch.testing.assert_close(gated.eval()(x), model(x))


def test_a_time_dim_the_code_divides_by_stays_fixed():
    torch.manual_seed(0)
    gated = lumos.compile(LastStep(mean=True).eval(), example_inputs=(torch.randn(4, 7, 6),))
    assert gated.input_shapes.shapes == ((None, 7, 6),)
    with pytest.raises(InputError, match="size 11 in dim 1"):
        gated(torch.randn(3, 11, 6))


def test_a_size_one_example_says_to_use_another_size():
    gated = lumos.compile(LastStep(mean=True).eval(), example_inputs=(torch.randn(4, 1, 6),))
    with pytest.raises(InputError, match="not 0 or 1"):
        gated(torch.randn(4, 5, 6))


def test_kept_inputs_take_the_kept_width_and_the_guard_travels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(8, 6),))
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha[:2] = -10.0
    kept = lumos.extract(gated, inputs="kept")
    assert kept(torch.randn(5, 4)).shape == (5, 1)
    full = lumos.extract(gated)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    buffer.seek(0)
    for m in (copy.deepcopy(gated), copy.deepcopy(full), torch.load(buffer, weights_only=False)):
        with pytest.raises(InputError, match="size 5 in dim 1"):
            m(torch.randn(3, 5))
    torch.export.export(full, (torch.randn(3, 6),))        # the check traces away


def test_guard_merges_and_frees_by_name():
    a = InputShapes(["x", "n"], [(None, 3, 4), None])
    b = InputShapes(["x", "n"], [(2, None, 4), None])
    assert a.merged(b).shapes == ((2, 3, 4), None)
    assert a.freeing({"x": [1]}).shapes == ((None, None, 4), None)
    a.check([torch.zeros(5, 3, 4), 7])


class TimeFirst(nn.Module):
    """A (time, batch, features) GRU: the kernel fixes dim 0, which is not the batch."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, 12)
        self.head = nn.Linear(12, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


def test_a_time_first_recurrent_model_compiles_for_any_length_and_batch():
    torch.manual_seed(0)
    model = TimeFirst().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(7, 3, 5),))
    assert gated.input_shapes.shapes == ((None, None, 5),)
    assert lumos.gates(gated)["x"].log_alpha.numel() == 5
    x = torch.randn(11, 2, 5)
    torch.testing.assert_close(gated.eval()(x), model(x))
    _close_some(gated)
    assert lumos.verify(gated, lumos.extract(gated), (x,)) < 1e-5


def test_the_suggested_dynamic_dim_captures_and_is_exact():
    torch.manual_seed(0)
    model = MeanOverTime().eval()
    dims = ({0: torch.export.Dim.AUTO, 2: torch.export.Dim.DYNAMIC},)
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 4, 32),), dynamic_shapes=dims)
    x = torch.randn(3, 4, 64)
    torch.testing.assert_close(gated.eval()(x), model(x))
