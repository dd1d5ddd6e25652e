"""The eager lowering of extracted graphs: direct calls, no eval dropout, no pytree
wrapping, the call-signature hook only where needed, a view for one run of inputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.passes.eager import EAGER_FUNCTIONS, EAGER_METHODS

aten = torch.ops.aten
X4 = torch.randn(2, 3, 5, 5)
CASES = {
    aten.linear.default: (torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)),
    aten.conv1d.default: (torch.randn(2, 3, 7), torch.randn(4, 3, 3), None, [2], [1], [1], 1),
    aten.conv2d.default: (X4, torch.randn(6, 1, 3, 3), torch.randn(6), [1, 1], [1, 1], [1, 1], 3),
    aten.conv3d.default: (torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 2, 2, 2)),
    aten.relu.default: (X4,), aten.sigmoid.default: (X4,), aten.tanh.default: (X4,),
    aten.gelu.default: (X4,), aten.silu.default: (X4,),
    aten.add.Tensor: (X4, torch.randn(5)), aten.mul.Tensor: (X4, 0.5),
    aten.batch_norm.default: (X4, torch.rand(3), torch.randn(3), torch.randn(3), torch.rand(3) + 0.5,
                              False, 0.1, 1e-5, False),
    aten.max_pool2d.default: (X4, [2, 2], [2, 2], [0, 0], [1, 1], True),
    aten.adaptive_avg_pool2d.default: (X4, [2, 3]),
    aten.flatten.using_ints: (X4, 1, -1), aten.cat.default: ([X4, X4], 1),
    aten.index_select.default: (X4, 1, torch.tensor([2, 0])),
    aten.narrow.default: (X4, 3, 1, 3),
}


@pytest.mark.parametrize("op", list(CASES), ids=str)
def test_each_direct_call_computes_what_the_overload_computes(op):
    assert set(CASES) == set(EAGER_FUNCTIONS) | set(EAGER_METHODS)
    args = CASES[op]
    expected = op(*args)
    if op in EAGER_FUNCTIONS:
        actual = EAGER_FUNCTIONS[op](*args)
    else:
        actual = getattr(args[0], EAGER_METHODS[op])(*args[1:])
    assert torch.equal(actual, expected)


def _close(gated, *, size, index):
    with torch.no_grad():
        next(g for g in lumos.gates(gated).values() if g.size == size).log_alpha[index] = -6.0


def test_mlp_extracts_to_direct_calls_without_wrapping_or_hooks():
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 2))
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 6),))
    _close(gated, size=6, index=[0, 5])          # kept inputs 1..4: one run
    _close(gated, size=8, index=[1, 2])
    pruned = lumos.extract(gated)
    code = pruned.code
    assert "torch.ops.aten" not in code and "pytree" not in code and "dropout" not in code
    assert ".narrow(1, 1, 4)" in code and "index_select" not in code
    assert not pruned._forward_pre_hooks
    x = torch.randn(9, 6)
    assert torch.equal(pruned(x), pruned(input=x))
    torch.testing.assert_close(pruned(x), gated.eval()(x))
    program = torch.export.export(pruned, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.testing.assert_close(program.module()(x[:3]), pruned(x[:3]))


def test_scattered_kept_inputs_keep_an_index_select():
    gated = lumos.compile(nn.Sequential(nn.Linear(6, 3)), example_inputs=(torch.randn(4, 6),))
    _close(gated, size=6, index=[2])
    pruned = lumos.extract(gated)
    assert ".index_select(1, lumos_kept_input)" in pruned.code
    x = torch.randn(5, 6)
    torch.testing.assert_close(pruned(x), gated.eval()(x))


class Options(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, mask=None):
        y = self.b(torch.relu(self.a(x)))
        return {"out": y, "both": (y, y.sum(1))}


def test_structured_outputs_and_default_arguments_still_work():
    gated = lumos.compile(Options(), example_inputs=(torch.randn(3, 4),))
    _close(gated, size=6, index=[0])
    pruned = lumos.extract(gated)
    assert "pytree" not in pruned.code and pruned._forward_pre_hooks   # mask=None is bound
    x = torch.randn(5, 4)
    out, expected = pruned(x, mask=None), gated.eval()(x)
    assert set(out) == {"out", "both"} and isinstance(out["both"], tuple)
    torch.testing.assert_close(out, expected)
    with pytest.raises(lumos.InputError, match="mask"):
        pruned(x, mask=torch.ones(5))
