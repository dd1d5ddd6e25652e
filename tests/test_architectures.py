"""Exactness on hand-written architectures (``tests/models/architectures.py``).

For each: (a) with all gates open the gated model equals the original; (b) with
random gates (uniform log_alpha in [-6, 6], one channel per gate open) extraction
is exact on another batch size and the pruned model has fewer parameters; (c) the
pruned model exports with a dynamic batch ``Dim``. Models run in float64 so the
tolerance measures rule errors, not round-off.

Plus: a residual block whose internal group is closed entirely (branch removal,
DESIGN.md section 5), and output feature maps keep their channels.
"""
from __future__ import annotations

import pytest
import torch

import lumos_fx as lumos
from tests.models.architectures import ARCHITECTURES, FEATURE_MAP_OUTPUTS
from tests.test_exactness_zoo import _n_params, _rel_err, randomize_gates

EXAMPLE_BATCH = 4
CHECK_BATCH = 3
EXPORT_BATCH = 5
REL_TOL = 1e-5
NAMES = list(ARCHITECTURES)


def _build(name):
    make_model, make_input = ARCHITECTURES[name]
    model = make_model().double().eval()

    def inputs(batch, seed):
        return make_input(batch, seed=seed).double()
    return model, inputs(EXAMPLE_BATCH, 1), inputs


def _gated(name, seed=0):
    model, x, inputs = _build(name)
    gated = lumos.compile(model, example_inputs=(x,))
    closed, total = randomize_gates(gated, seed)
    assert 0 < closed < total
    return model, gated, x, inputs


def _group_of(gated, layer: str):
    """The report group whose layers include ``layer``, and its gate key."""
    rep = lumos.report(gated)
    groups = [g for g in rep.groups if layer in g.layers and g.pinned is None]
    assert len(groups) >= 1, [(g.name, g.layers) for g in rep.groups]
    return groups, rep


@pytest.mark.parametrize("name", NAMES)
def test_open_gates_equal_original(name):
    model, x, inputs = _build(name)
    gated = lumos.compile(model, example_inputs=(x,))
    assert lumos.gates(gated)
    with torch.no_grad():
        for inp in (x, inputs(CHECK_BATCH, 2)):
            ref = model(inp)
            out = gated.eval()(inp)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_random_gates_exact_and_smaller(name):
    model, gated, x, inputs = _gated(name)
    x3 = inputs(CHECK_BATCH, 3)
    with torch.no_grad():
        ref = gated.eval()(x3)
    pruned = lumos.extract(gated).eval()
    with torch.no_grad():
        out = pruned(x3)
        orig = model(x3)
    assert out.shape == ref.shape == orig.shape
    err = _rel_err(out, ref)
    assert err <= REL_TOL, f"rel err {err:.3g}"
    assert _n_params(pruned) < _n_params(model), (_n_params(pruned), _n_params(model))
    assert lumos.verify(gated, pruned, (x3,), rtol=REL_TOL) <= REL_TOL


@pytest.mark.parametrize("name", NAMES)
def test_export_dynamic_batch(name):
    model, gated, x, inputs = _gated(name, seed=5)
    pruned = lumos.extract(gated).eval()
    ep = torch.export.export(pruned, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    x5 = inputs(EXPORT_BATCH, 6)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x5), pruned(x5), rtol=1e-9, atol=1e-11)
        assert _rel_err(pruned(x5), gated.eval()(x5)) <= REL_TOL


@pytest.mark.parametrize("name", FEATURE_MAP_OUTPUTS)
def test_feature_map_output_keeps_channels(name):
    """The output is a feature map: every output channel survives, shapes match."""
    model, gated, x, inputs = _gated(name, seed=7)
    pruned = lumos.extract(gated).eval()
    x3 = inputs(CHECK_BATCH, 8)
    with torch.no_grad():
        assert pruned(x3).shape == model(x3).shape
        assert _rel_err(pruned(x3), gated.eval()(x3)) <= REL_TOL
    rep = lumos.report(gated)
    outputs = [g for g in rep.groups if g.pinned == "model output"]
    assert outputs and all(g.kept == g.total for g in outputs)


def test_residual_branch_closed_completely():
    """Close every gate of ``block1``'s internal group (conv1 output): the branch is
    a constant, extraction stays exact, and the branch shrinks (DESIGN.md section 5:
    it is replaced by a constant and its layers are deleted)."""
    model, x, inputs = _build("residual_branch")
    gated = lumos.compile(model, example_inputs=(x,))
    groups, _ = _group_of(gated, "block1.conv1")
    internal = [g for g in groups if "block1.conv1" in getattr(g, "producers", g.layers)
                and "block1.conv2" in g.layers and "block2.conv1" not in g.layers]
    assert len(internal) == 1, [(g.name, g.layers) for g in groups]
    key = next(k for k in lumos.gates(gated) if k == internal[0].name
               or k.endswith(internal[0].name.replace(".", "_")))
    open_params = lumos.report(gated).params_after
    with torch.no_grad():
        lumos.gates(gated)[key].log_alpha.fill_(-8.0)

    pruned = lumos.extract(gated).eval()
    x3 = inputs(CHECK_BATCH, 3)
    with torch.no_grad():
        assert _rel_err(pruned(x3), gated.eval()(x3)) <= REL_TOL
    rep = lumos.report(gated)
    group = next(g for g in rep.groups if g.name == internal[0].name)
    assert group.kept <= 1, group
    conv1 = model.block1.conv1.weight.numel() + model.block1.conv2.weight.numel()
    assert rep.params_after <= open_params - conv1 + 2 * 8 * 9, (rep.params_after, open_params)
    # the branch is gone: no conv of block1 survives
    remaining = [n for n, _ in pruned.named_modules() if n.startswith("block1.conv")]
    assert not remaining, remaining
    ep = torch.export.export(pruned, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x3), pruned(x3))


def test_input_residual_ties_input_features():
    """``x + f(x)`` on the model input: the input feature group spans f's last conv,
    and closing input features keeps the model exact."""
    model, x, inputs = _build("input_residual_cnn")
    gated = lumos.compile(model, example_inputs=(x,))
    rep = lumos.report(gated)
    inp = [g for g in rep.groups if g.kind == "input"]
    assert len(inp) == 1 and inp[0].pinned is None, inp
    assert any(layer.startswith("f.1") for layer in inp[0].layers), inp[0].layers
    key = next(k for k in lumos.gates(gated) if lumos.gates(gated)[k].log_alpha.numel() == 3)
    with torch.no_grad():
        lumos.gates(gated)[key].log_alpha[1] = -8.0
    pruned = lumos.extract(gated).eval()
    x3 = inputs(CHECK_BATCH, 3)
    with torch.no_grad():
        assert _rel_err(pruned(x3), gated.eval()(x3)) <= REL_TOL
    assert pruned.lumos_kept_inputs[next(iter(pruned.lumos_kept_inputs))] == [0, 2]


if __name__ == "__main__":  # status table: python -m tests.test_architectures
    for arch in NAMES:
        _, gated_model, _, _ = _gated(arch)
        report = lumos.report(gated_model)
        pins = sorted({g.pinned for g in report.groups if g.pinned})
        shrunk = sum(g.kept < g.total for g in report.groups)
        print(f"{arch:20s} params {report.params_before}->{report.params_after}  groups "
              f"{len(report.groups)} ({shrunk} shrunk)  pinned by: {'; '.join(pins) or '-'}")
