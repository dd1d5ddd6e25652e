"""Property-based exactness over randomly generated architectures.

Models are drawn as *programs* of block specs (``tests/models/structures.py``):
nested residuals (including residuals tied to the model input), concatenated
branches, split/chunk/slice and recombine, squeeze-and-excitation, grouped,
depthwise and transposed convs, Batch/Group/Instance/LayerNorm (channels-last),
channel shuffle, resizing, padding, ``mean/sum/amax`` with ``keepdim``,
activations, and NCHW / channels-last flatten heads. Failures shrink to a
readable program.

For every example (float64, so round-off stays out of it):

1. ``compile`` succeeds, or raises a :class:`lumos.LumosError` with a message;
2. with all gates open, the gated model equals the original;
3. after random ``log_alpha`` (uniform in [-6, 6], sometimes whole gates
   closed) ``extract`` is exact (rel. error <= 1e-5) on a batch size different
   from the example, and no larger than the original;
4. the pruned model exports with a dynamic batch ``Dim`` and the exported
   program computes the same.

Profiles: ``ci`` (default, 100 examples, derandomized) and ``full`` (400
examples): ``LUMOS_HYPOTHESIS_PROFILE=full pytest tests/test_structures_property.py``.
``LUMOS_STRUCTURES_EXCLUDE=pad_channels,shuffle`` leaves block kinds out (triage).

``python -m tests.test_structures_property`` prints, for every structure of
:data:`~tests.models.structures.STRUCTURES`, whether it is pruned or pinned.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import lumos_fx as lumos
from tests.models.structures import STRUCTURES, Head, InputSkip, ProgramNet, programs
from tests.test_exactness_zoo import _n_params, _rel_err, randomize_gates

EXAMPLE_BATCH = 4
CHECK_BATCH = 3
EXPORT_BATCH = 5
REL_TOL = 1e-5

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
# ci: stop at the first bug so a failing run shrinks one example, not every distinct bug
settings.register_profile("ci", max_examples=100, derandomize=True, database=None,
                          report_multiple_bugs=False, **_COMMON)
settings.register_profile("full", max_examples=400, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("LUMOS_HYPOTHESIS_PROFILE", "ci"))
#: block kinds to leave out (comma separated), to look past a known bug while triaging
# random gates often close every path (close_whole): extraction then rightly warns
pytestmark = pytest.mark.filterwarnings("ignore:lumos. every path from the model inputs")
EXCLUDE = tuple(k for k in os.environ.get("LUMOS_STRUCTURES_EXCLUDE", "").split(",") if k)


# --------------------------------------------------------------------------- helpers
def build(program, head, seed: int = 0):
    model = ProgramNet(program, head, seed=seed).double().eval()
    x = ProgramNet.make_input(EXAMPLE_BATCH, seed=1).double()
    return model, x


def compile_or_skip(model, x):
    """``lumos.compile``; a LumosError is an accepted outcome (returns None)."""
    try:
        return lumos.compile(model, example_inputs=(x,))
    except lumos.LumosError as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


def check_open_gates_equal(model, gated, x):
    x2 = ProgramNet.make_input(CHECK_BATCH, seed=2).double()
    with torch.no_grad():
        for inp in (x, x2):
            ref = model(inp)
            out = gated.eval()(inp)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def check_extract_exact(model, gated):
    x3 = ProgramNet.make_input(CHECK_BATCH, seed=3).double()
    with torch.no_grad():
        ref = gated.eval()(x3)
    pruned = lumos.extract(gated).eval()
    with torch.no_grad():
        out = pruned(x3)
    assert out.shape == ref.shape
    err = _rel_err(out, ref)
    assert err <= REL_TOL, f"pruned vs gated.eval(): rel err {err:.3g}"
    assert _n_params(pruned) <= _n_params(model)
    return pruned


def check_export(pruned, x):
    batch = torch.export.Dim("batch", min=2)
    ep = torch.export.export(pruned, (x,), dynamic_shapes=({0: batch},))
    x5 = ProgramNet.make_input(EXPORT_BATCH, seed=5).double()
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x5), pruned(x5), rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- property
@settings(PROFILE)
@given(spec=programs(exclude=EXCLUDE), weight_seed=st.integers(0, 2**16), gate_seed=st.integers(0, 2**16),
       close_whole=st.sampled_from((0.0, 0.0, 0.3)))
# found by the full run: a silent head whose flatten positions are also gated
@example(spec=((InputSkip(c=4), InputSkip(c=8), InputSkip(c=8)), Head(kind="flatten")),
         weight_seed=0, gate_seed=6, close_whole=0.3)
def test_random_architectures_exact(spec, weight_seed, gate_seed, close_whole):
    program, head = spec
    model, x = build(program, head, weight_seed)
    gated = compile_or_skip(model, x)
    event("compiled" if gated is not None else "compile refused with a LumosError")
    if gated is None:
        return
    check_open_gates_equal(model, gated, x)
    randomize_gates(gated, gate_seed, close_whole, keep_one_open=False)
    pruned = check_extract_exact(model, gated)
    check_export(pruned, x)


# --------------------------------------------------------------------------- per structure
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_structure_exact(name):
    """Every catalogued structure alone: open-gates equality, exact extraction, export."""
    program, head = STRUCTURES[name]
    model, x = build(program, head)
    gated = compile_or_skip(model, x)
    if gated is None:
        pytest.skip("compile raised a LumosError")
    check_open_gates_equal(model, gated, x)
    randomize_gates(gated, seed=11, keep_one_open=False)
    pruned = check_extract_exact(model, gated)
    check_export(pruned, x)


def structure_status(name: str) -> tuple[str, str]:
    """``(status, detail)`` for one catalogued structure, after random gates.

    Looks at the groups of the structure's own layers and of the conv feeding it
    (block 0; for a head, the head): ``pruned`` when none of them is pinned,
    ``partly pinned`` when some are, ``pinned`` when all are. ``detail`` lists
    each group as ``name kept/total`` with the pin reason.
    """
    program, head = STRUCTURES[name]
    model, x = build(program, head)
    try:
        gated = lumos.compile(model, example_inputs=(x,))
    except lumos.LumosError as err:
        return "error", f"{type(err).__name__}: {err}"
    randomize_gates(gated, seed=11, keep_one_open=False)
    rep = lumos.report(gated)
    prefixes = ("body.blocks.0.", "head.") if name.startswith("head_") else \
        ("body.blocks.0.", "body.blocks.1.")
    mine = [g for g in rep.groups if g.pinned != "model output"
            and any(layer.startswith(prefixes) for layer in g.layers)]
    pinned = [g for g in mine if g.pinned]
    status = "pinned" if mine and len(pinned) == len(mine) else \
        "partly pinned" if pinned else "pruned"
    groups = ", ".join(f"{g.name} {g.kept}/{g.total}" + (f" [{g.pinned}]" if g.pinned else "")
                       for g in mine)
    return status, f"params {rep.params_before}->{rep.params_after}; {groups}"


if __name__ == "__main__":
    for structure in STRUCTURES:
        try:
            status, detail = structure_status(structure)
        except Exception as err:  # noqa: BLE001 - a status table, not a test
            status, detail = "FAIL", f"{type(err).__name__}: {str(err)[:150]}"
        print(f"{structure:24s} {status:13s} {detail}")
