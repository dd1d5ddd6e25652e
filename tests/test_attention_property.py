"""Property test: random transformer stacks stay exact under random gates.

Stacks come from :func:`tests.models.attention_stacks.stack_specs`: separate or
packed ``q/k/v``, ``nn.MultiheadAttention`` or ``nn.TransformerEncoderLayer``;
SDPA or manual softmax attention; GQA ratio 1 or 2 (``repeat_interleave`` or
``expand``); pre- or post-norm with LayerNorm or RMSNorm; optional class token
and position embedding; depth 1-3; random head counts, head sizes, FFN widths.

For every example (float64, so round-off stays out of it), captured in train mode:

1. with every gate open the gated model equals the original, in train mode (same
   RNG) and in eval mode;
2. after random gates (single heads, FFN channels and stream channels closed;
   with ``close_whole`` whole gates: all heads of a block, a whole FFN)
   extraction is exact (rel. error <= 1e-5) against the gated model in eval mode,
   on a batch and sequence length different from the example;
3. no block's heads or FFN width nor the residual stream are pinned; the pruned model is no larger, and
   a block whose heads (FFN) are all closed keeps no attention (FFN) parameter;
4. the pruned model exports with a dynamic batch and sequence length (batch only
   where the original model cannot export a dynamic length) and the exported
   program computes the same.

Profiles: ``ci`` (default, derandomized) and ``full``:
``LUMOS_HYPOTHESIS_PROFILE=full pytest tests/test_attention_property.py``.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.export import Dim

import lumos_fx as lumos
from tests.models.attention_stacks import KINDS, AttentionStack, StackSpec, stack_specs
from tests.test_exactness_zoo import _n_params, _rel_err, randomize_gates

REL_TOL = 1e-5
OPEN = 8.0      # log_alpha at the clamp limit: every gate is 1 in train and eval mode

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
# per attention kind: 4 x 4 examples, ~60 s on 2 cores (torch.export is most of it)
settings.register_profile("attention-ci", max_examples=4, derandomize=True, database=None,
                          report_multiple_bugs=False, **_COMMON)
settings.register_profile("attention-full", max_examples=25, **_COMMON)
PROFILE = "attention-full" if os.environ.get("LUMOS_HYPOTHESIS_PROFILE") == "full" \
    else "attention-ci"
pytestmark = pytest.mark.filterwarnings("ignore:lumos. every path from the model inputs")


def _inputs(spec, batch, tokens, seed):
    return AttentionStack.make_input(spec, batch, tokens, seed).double()


def check_open_gates_equal(model, gated, spec):
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.fill_(OPEN)
        x = _inputs(spec, 3, 7, seed=2)
        for training in (True, False):
            torch.manual_seed(5)
            ref = model.train(training)(x)
            torch.manual_seed(5)
            out = gated.train(training)(x)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def sublayers(spec: StackSpec) -> dict[str, str]:
    """``{gate name: parameter prefix}`` for every block's heads and FFN."""
    names = {}
    for i in range(spec.depth):
        if spec.kind == "encoder_layer":
            layer = f"blocks.{i}.layer"
            names[f"{layer}.self_attn"] = f"{layer}.self_attn."
            names[f"{layer}.linear1"] = f"{layer}.linear"
            continue
        heads = {"separate": "q", "packed": "qkv", "mha": "mha"}[spec.kind]
        names[f"blocks.{i}.attn.{heads}"] = f"blocks.{i}.attn."
        names[f"blocks.{i}.fc1"] = f"blocks.{i}.fc"
    return names


def check_sublayers_gated(gated, spec):
    """Every block's heads and FFN width and the residual stream have a gate, none pinned.

    Known gap: one key/value head copied for manual attention (``q @ k^T`` of a
    ``view(B, N, 1, D)`` repeated over the query heads) pins its heads (exactly)."""
    groups = {g.name: g for g in lumos.report(gated).groups}
    single_kv_manual = spec.kind == "separate" and not spec.sdpa and spec.heads == spec.kv_ratio
    for name in [*sublayers(spec), "embed"]:
        if single_kv_manual and ".attn." in name:
            continue
        assert name in groups and groups[name].pinned is None, (name, groups.get(name))


def check_closed_sublayers_removed(gated, pruned, spec) -> int:
    """A block whose heads (or FFN) are all closed keeps no attention (FFN) parameter;
    returns how many sublayers were closed."""
    gates = lumos.gates(gated)
    left = [name for name, _ in pruned.named_parameters()]
    closed = [gate for gate in sublayers(spec)
              if gate in gates and not gates[gate].deterministic().any()]
    for gate in closed:
        prefix = sublayers(spec)[gate]
        assert not [n for n in left if n.startswith(prefix)], (gate, left)
    return len(closed)


def check_extract_exact(model, gated, spec):
    x = _inputs(spec, 3, 9, seed=3)            # example: batch 4, 6 tokens
    with torch.no_grad():
        ref = gated.eval()(x)
        pruned = lumos.extract(gated).eval()
        out = pruned(x)
    assert out.shape == ref.shape
    err = _rel_err(out, ref)
    assert err <= REL_TOL, f"pruned vs gated.eval(): rel err {err:.3g}"
    assert _n_params(pruned) <= _n_params(model)
    return pruned


def check_export(model, pruned, spec):
    """Dynamic batch and sequence length; the sequence length stays static only where
    the original model cannot export it either (torch cannot prove some stride guards
    of ``repeat_interleave`` over ``tokens + 1``)."""
    x = _inputs(spec, 4, 6, seed=4)
    batch, tokens = Dim("batch", min=2), Dim("tokens", min=2, max=12)
    try:
        program = torch.export.export(pruned, (x,), dynamic_shapes=({0: batch, 1: tokens},))
        other = _inputs(spec, 5, 11, seed=5)
    except torch._dynamo.exc.UserError:
        with pytest.raises(torch._dynamo.exc.UserError):     # the original cannot either
            torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch, 1: tokens},))
        program = torch.export.export(pruned, (x,), dynamic_shapes=({0: batch},))
        other = _inputs(spec, 5, 6, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), pruned(other), rtol=1e-9, atol=1e-11)


def run_example(spec: StackSpec, weight_seed: int, gate_seed: int, close_whole: float):
    model = AttentionStack(spec, seed=weight_seed).double().train()
    gated = lumos.compile(model, example_inputs=(_inputs(spec, 4, 6, seed=1),))
    check_sublayers_gated(gated, spec)
    check_open_gates_equal(model, gated, spec)
    randomize_gates(gated, gate_seed, close_whole, keep_one_open=False)
    pruned = check_extract_exact(model, gated, spec)
    closed = check_closed_sublayers_removed(gated, pruned, spec)
    check_export(model, pruned, spec)
    return closed


@pytest.mark.parametrize("kind", KINDS)
@settings(settings.get_profile(PROFILE))
@given(data=st.data(), weight_seed=st.integers(0, 2 ** 16),
       gate_seed=st.integers(0, 2 ** 16), close_whole=st.sampled_from((0.3, 0.0, 0.6)))
def test_random_attention_stacks_are_exact(kind, data, weight_seed, gate_seed, close_whole):
    spec = data.draw(stack_specs(kind), label="spec")
    event(f"depth {spec.depth}, {'pre' if spec.norm_first else 'post'}-norm {spec.norm}")
    closed = run_example(spec, weight_seed, gate_seed, close_whole)
    event(f"{'some' if closed else 'no'} whole sublayer closed")
