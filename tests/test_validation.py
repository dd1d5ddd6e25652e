"""Every option is validated; nothing silently wrong, nothing crashes on ordinary inputs."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import lumos_fx as lumos


def _mlp():
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))


X = torch.randn(8, 10)


@pytest.mark.parametrize("lam", [-1, math.nan, math.inf, "1", True])
def test_bad_lam_is_refused(lam):
    with pytest.raises(lumos.InputError, match="lam"):
        lumos.compile(_mlp(), example_inputs=(X,), lam=lam)


def test_lam_and_budget_together_is_refused():
    with pytest.raises(lumos.InputError, match="either lam= or budget="):
        lumos.compile(_mlp(), example_inputs=(X,), lam=0.5, budget=0.3)


@pytest.mark.parametrize("dims,words", [
    ({"input": 5}, "out of range"), ({"inputs": 1}, "names 'inputs'"),
    ({"input": 0}, "batch dim"), ({"input": 1.5}, "int dim"), ([1], "dict")])
def test_bad_input_dims_are_refused(dims, words):
    with pytest.raises(lumos.InputError, match=words):
        lumos.compile(_mlp(), example_inputs=(X,), input_dims=dims)


def test_too_many_example_inputs_is_refused():
    with pytest.raises(lumos.InputError, match="takes 1 positional"):
        lumos.compile(_mlp(), example_inputs=(X, X))


def test_nan_in_example_inputs_is_refused():
    bad = X.clone()
    bad[0, 0] = math.nan
    with pytest.raises(lumos.InputError, match="NaN"):
        lumos.compile(_mlp(), example_inputs=(bad,))


def test_feature_names_error_points_to_input_dims():
    with pytest.raises(lumos.InputError, match="input_dims"):
        lumos.compile(_mlp(), example_inputs=(X,), feature_names=["a", "b"])


def test_sequence_features_are_the_last_dim():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(12, 8), nn.Linear(8, 1)

        def forward(self, x):          # (batch, time, features)
            return self.head(torch.tanh(self.fc(x))).mean(1)

    gated = lumos.compile(Seq(), example_inputs=(torch.randn(4, 20, 12),),
                          feature_names=[f"f{i}" for i in range(12)])
    assert lumos.gates(gated)["x"].log_alpha.numel() == 12
    assert lumos.gates(gated)["x"].log_alpha.numel() != 20


def test_nan_gates_make_extract_raise_naming_them():
    gated = lumos.compile(_mlp(), example_inputs=(X,))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[3] = math.nan
    with pytest.raises(lumos.InputError, match="gates 0 have NaN"):
        lumos.extract(gated)


def test_a_traced_through_linear_subclass_extracts():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(10, 16), nn.ReLU(), MyLinear(16, 2))
    gated = lumos.compile(model, example_inputs=(X,))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[:5] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_submodule("0").weight.shape == (11, 10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_extract_after_a_dtype_move(dtype):
    gated = copy.deepcopy(lumos.compile(_mlp(), example_inputs=(X,))).to(dtype)
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[:5] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_submodule("0").weight.dtype == dtype
    assert float(lumos.penalty(gated)) > 0


def test_a_bad_gate_config_is_refused():
    with pytest.raises(lumos.InputError, match="GateConfig"):
        lumos.compile(_mlp(), example_inputs=(X,), gate_config={"beta": 0.5})


class _Cumulative(nn.Module):
    """cumsum over the channel dim has no rule: it pins everything it reads."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(6, 32), nn.Linear(32, 1)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x.cumsum(-1))).cumsum(-1))


def test_compile_says_when_little_can_be_pruned_and_names_the_op():
    with pytest.warns(UserWarning, match=r"can be pruned at all; pinned by: .*cumsum"):
        lumos.compile(_Cumulative(), example_inputs=(torch.randn(4, 6),))


def test_a_budget_below_the_smallest_extractable_model_is_refused():
    with pytest.raises(lumos.InputError, match=r"below the smallest model .* at least (0\.9|1\.0)"):
        lumos.compile(_Cumulative(), example_inputs=(torch.randn(4, 6),), budget=0.3)


class _WithMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 4)

    def forward(self, x, mask=None, scale: float = 1.0):
        h = self.fc(x)
        if mask is not None:
            h = h * mask
        return h * scale


def test_arguments_left_at_their_defaults_are_accepted_by_gated_and_pruned_models():
    model = _WithMask().eval()
    gated = lumos.compile(model, example_inputs=(X,)).eval()
    pruned = lumos.extract(gated)
    for compiled in (gated, pruned):
        expected = model(X)
        torch.testing.assert_close(compiled(X, mask=None), expected)
        torch.testing.assert_close(compiled(x=X, scale=1.0), expected)
        torch.testing.assert_close(compiled(X, None, 1.0), expected)
        with pytest.raises(lumos.InputError, match="'mask' was not among the example inputs"):
            compiled(X, mask=torch.ones(4))
