"""End-to-end exactness over the model zoo (DESIGN.md section 5).

For every zoo model:

(a) a freshly compiled model computes exactly what the original computes;
(b) with random gates (a good share closed), ``extract`` writes a smaller
    model whose output matches ``gated.eval()`` to float round-off, on a batch
    size different from the example input;
(c) the pruned model exports with a dynamic batch dim, saves, loads and runs.

Plus: the user's model is never modified by compile / training / extract.
"""
from __future__ import annotations


import pytest
import torch

import lumos_fx as lumos
from lumos_fx.gated_module import GatedModule
from tests.models.zoo import ZOO, ZOO_IDS

EXAMPLE_BATCH = 8
CHECK_BATCH = 5
EXPORT_BATCH = 3
REL_TOL = 1e-5


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().clamp_min(1e-12)
    return float((out - ref).abs().max() / scale)


def gate_widths(gated: torch.nn.Module) -> dict[str, int]:
    """Each gate's key and number of channels."""
    return {key: gate.log_alpha.numel() for key, gate in lumos.gates(gated).items()}


def randomize_gates(gated: torch.nn.Module, seed: int = 0, close_whole: float = 0.0,
                    keep_one_open: bool = True) -> tuple[int, int]:
    """Uniform log_alpha in [-6, 6]; with ``keep_one_open`` every gate keeps one channel
    open, and with probability ``close_whole`` a gate is closed entirely (every entry -8).

    Returns ``(closed, total)`` channel counts over all gates.
    """
    g = torch.Generator().manual_seed(seed)
    closed = total = 0
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            la = gate.log_alpha
            values = torch.rand(la.shape, generator=g, dtype=torch.float64) * 12.0 - 6.0
            if keep_one_open:
                values[int(torch.randint(la.numel(), (1,), generator=g))] = 6.0
            if close_whole and float(torch.rand((), generator=g)) < close_whole:
                values.fill_(-8.0)
            la.copy_(values.to(la.dtype))
            closed += int((la <= -2.4).sum())
            total += la.numel()
    return closed, total


def _build(name_factory_input):
    name, make_model, make_input = name_factory_input
    model = make_model().eval()
    x = make_input(EXAMPLE_BATCH, seed=1)
    return model, x, make_input


@pytest.fixture(params=ZOO, ids=ZOO_IDS)
def zoo_entry(request):
    return request.param


# ------------------------------------------------------------------------ (a)
def test_compile_is_exact_at_init(zoo_entry):
    model, x, make_input = _build(zoo_entry)
    gated = lumos.compile(model, example_inputs=(x,))
    assert isinstance(gated, GatedModule)
    assert gated is not model
    assert lumos.gates(gated), "compile inserted no gates"
    for key, gate in lumos.gates(gated).items():
        assert isinstance(gate.log_alpha, torch.nn.Parameter), key
        assert gate.log_alpha.dim() == 1, key

    x2 = make_input(CHECK_BATCH, seed=2)
    with torch.no_grad():
        for inp in (x, x2):
            ref = model.eval()(inp)
            out = gated.eval()(inp)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
        # training mode: same output shapes
        assert gated.train()(x).shape == model(x).shape


# ------------------------------------------------------------------------ (b)
def _pruned(zoo_entry, seed: int = 0):
    model, x, make_input = _build(zoo_entry)
    gated = lumos.compile(model, example_inputs=(x,))
    closed, total = randomize_gates(gated, seed)
    assert closed > 0 and closed < total
    return model, gated, x, make_input


def test_extract_is_exact_and_smaller(zoo_entry):
    model, gated, x, make_input = _pruned(zoo_entry)
    x5 = make_input(CHECK_BATCH, seed=2)
    with torch.no_grad():
        ref = gated.eval()(x5).clone()
    gated.train()  # extract must use the deterministic gates whatever the mode
    pruned = lumos.extract(gated)

    assert isinstance(pruned, torch.fx.GraphModule)
    gate_modules = [f"{n}: {type(m).__name__}" for n, m in pruned.named_modules()
                    if "gate" in type(m).__name__.lower()]
    assert not gate_modules, gate_modules
    n_model, n_pruned = _n_params(model), _n_params(pruned)
    assert 0 < n_pruned < n_model, (n_pruned, n_model)

    with torch.no_grad():
        out = pruned.eval()(x5)
        assert out.shape == ref.shape
        err = _rel_err(out, ref)
        assert err <= REL_TOL, f"pruned vs gated.eval(): rel err {err:.3g}"
        # extract did not change the gated model
        torch.testing.assert_close(gated.eval()(x5), ref, rtol=0, atol=0)
        # the example batch size works too
        err8 = _rel_err(pruned(x), gated(x))
        assert err8 <= REL_TOL, err8


def test_verify_and_report(zoo_entry):
    model, gated, x, make_input = _pruned(zoo_entry, seed=3)
    pruned = lumos.extract(gated)
    err = lumos.verify(gated, pruned, (make_input(CHECK_BATCH, seed=4),), rtol=REL_TOL)
    assert isinstance(err, float) and 0.0 <= err <= REL_TOL
    text = str(lumos.report(gated))
    assert len(text.splitlines()) >= 2, text


# ------------------------------------------------------------------------ (c)
def test_export_dynamic_batch_roundtrip(zoo_entry, tmp_path):
    model, gated, x, make_input = _pruned(zoo_entry, seed=5)
    pruned = lumos.extract(gated).eval()
    batch = torch.export.Dim("batch", min=2)
    ep = torch.export.export(pruned, (x,), dynamic_shapes=({0: batch},))
    path = tmp_path / "pruned.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path).module()

    x3 = make_input(EXPORT_BATCH, seed=6)
    with torch.no_grad():
        expected = pruned(x3)
        torch.testing.assert_close(loaded(x3), expected)
        assert _rel_err(expected, gated.eval()(x3)) <= REL_TOL


# ------------------------------------------------- the user's model is untouched
def _snapshot(model: torch.nn.Module):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "dict_keys": {n: sorted(m.__dict__) for n, m in model.named_modules()},
        "forward": type(model).__dict__.get("forward"),
        "class": type(model),
        "training": model.training,
    }


def test_user_model_unchanged(zoo_entry):
    name, make_model, make_input = zoo_entry
    model = make_model()
    model.train()
    before = _snapshot(model)
    x = make_input(EXAMPLE_BATCH, seed=1)

    gated = lumos.compile(model, example_inputs=(x,))
    gated.train()
    opt = torch.optim.Adam(gated.parameters(), lr=1e-2)
    for step in range(3):
        out = gated(make_input(EXAMPLE_BATCH, seed=10 + step))
        loss = out.pow(2).mean() + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruned = lumos.extract(gated)
    with torch.no_grad():
        pruned.eval()(x)

    after = _snapshot(model)
    assert after["class"] is before["class"]
    assert after["forward"] is before["forward"], "type(model).forward was patched"
    assert "forward" not in model.__dict__, "forward monkey-patched on the instance"
    assert after["types"] == before["types"]
    assert after["dict_keys"] == before["dict_keys"]
    assert after["training"] == before["training"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{key} changed"
    # no parameter is shared between the user's model and the compiled/pruned ones
    user_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not user_ptrs & {p.data_ptr() for p in gated.parameters()}
    assert not user_ptrs & {p.data_ptr() for p in pruned.parameters()}


def test_penalty_is_differentiable():
    name, make_model, make_input = ZOO[0]
    gated = lumos.compile(make_model(), example_inputs=(make_input(EXAMPLE_BATCH),))
    pen = lumos.penalty(gated)
    assert pen.dim() == 0
    pen.backward()
    grads = [g.log_alpha.grad for g in lumos.gates(gated).values()]
    assert all(gr is not None for gr in grads)
    assert any(bool(gr.abs().sum() > 0) for gr in grads)
