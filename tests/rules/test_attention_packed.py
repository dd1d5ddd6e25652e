"""Heads of packed projections (timm ``qkv``, ``nn.MultiheadAttention``'s ``in_proj_weight``),
torch's Transformer layers and grouped-query attention: gated, extracted exactly, exported."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import lumos_fx as lumos
from tests.models.attention_blocks import (GroupedQueryAttention, PackedAttention, Residual,
                                           TorchDecoder, TorchEncoder, TorchMHA)
from tests.test_exactness_zoo import randomize_gates

DIM, HEADS, HEAD_DIM = 32, 4, 8

# name -> (model factory, head group, head count, attention parameters)
CASES = {
    "timm_unbind_sdpa": (lambda: Residual(PackedAttention(DIM, HEADS)), "attn.qkv", HEADS,
                         ("attn.qkv.weight", "attn.proj.weight")),
    "timm_index_manual": (lambda: Residual(PackedAttention(DIM, HEADS, sdpa=False, index=True)),
                          "attn.qkv", HEADS, ("attn.qkv.weight", "attn.proj.weight")),
    "mha": (lambda: Residual(TorchMHA(DIM, HEADS)), "attn.mha", HEADS,
            ("attn.mha.in_proj_weight", "attn.mha.out_proj.weight")),
    "mha_seq_first_need_weights": (
        lambda: Residual(TorchMHA(DIM, HEADS, batch_first=False, need_weights=True)), "attn.mha",
        HEADS, ("attn.mha.in_proj_weight", "attn.mha.out_proj.weight")),
    "encoder_layer": (lambda: TorchEncoder(), "layer.self_attn", HEADS,
                      ("layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.weight")),
    "encoder_layer_seq_first_norm_first": (
        lambda: TorchEncoder(batch_first=False, norm_first=True), "layer.self_attn", HEADS,
        ("layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.weight")),
    "gqa_repeat_interleave": (lambda: Residual(GroupedQueryAttention(DIM, HEADS, 2)), "attn.q", 2,
                              ("attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight")),
    "gqa_expand": (lambda: Residual(GroupedQueryAttention(DIM, HEADS, 2, "expand")), "attn.q", 2,
                   ("attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight")),
    "gqa_enable_gqa": (lambda: Residual(GroupedQueryAttention(DIM, HEADS, 2, "enable_gqa")),
                       "attn.q", 2, ("attn.q.weight", "attn.k.weight", "attn.v.weight",
                                     "attn.o.weight")),
}


def _compile(name, training=False):
    torch.manual_seed(0)
    make, group, heads, params = CASES[name]
    model = make().train(training)
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 6, 7),))
    return model, gated, group, heads, params


def _rows(module, path):
    return module.get_parameter(path).numel()


@pytest.mark.parametrize("name", list(CASES))
def test_heads_are_gated_and_random_gates_extract_exactly(name):
    model, gated, group, heads, params = _compile(name)
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups[group].pinned is None and groups[group].total == heads, lumos.report(gated)
    assert groups["embed"].pinned is None       # the residual stream stays prunable
    with torch.no_grad():
        x = torch.randn(5, 9, 7)
        torch.testing.assert_close(gated.eval()(x), model.eval()(x))
    randomize_gates(gated, seed=4)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(5, 9, 7),)) < 1e-5   # other batch and length
    before = sum(_rows(model, p) for p in params)
    assert sum(_rows(pruned, p) for p in params) < before
    exported = torch.export.export(pruned, (torch.randn(4, 6, 7),), dynamic_shapes=(
        {0: Dim("batch", min=2), 1: Dim("tokens", min=2)},))
    other = torch.randn(6, 11, 7)
    torch.testing.assert_close(exported.module()(other), pruned(other))


@pytest.mark.parametrize("name", ["timm_unbind_sdpa", "mha", "gqa_expand"])
def test_closing_one_head_removes_its_rows_in_every_projection(name):
    model, gated, group, heads, params = _compile(name)
    with torch.no_grad():
        lumos.gates(gated)[group].log_alpha[1] = -8.0
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(2, 5, 7),)) < 1e-5
    first, *_, last = params
    rows = model.get_parameter(first).shape[0]
    per_head = rows // heads
    assert pruned.get_parameter(first).shape[0] == rows - per_head
    assert pruned.get_parameter(last).shape[1] == DIM - DIM // heads
    if name == "timm_unbind_sdpa":      # head 1 is rows 8..15 of each third of qkv
        kept = [r for r in range(3 * DIM) if (r % DIM) // HEAD_DIM != 1]
        torch.testing.assert_close(pruned.get_parameter(first), model.get_parameter(first)[kept])
    if name == "gqa_expand":            # kv head 1 and its two query heads
        assert pruned.get_parameter("attn.k.weight").shape[0] == HEAD_DIM


@pytest.mark.parametrize("name", list(CASES))
def test_all_heads_closed_removes_the_attention_sublayer(name):
    """Also ``nn.MultiheadAttention``, whose ``out_proj`` runs on ``(N*B, C)`` rows: the
    constant replacing it is expanded to sizes computed from the inputs' sizes."""
    model, gated, group, _, params = _compile(name)
    with torch.no_grad():
        lumos.gates(gated)[group].log_alpha.fill_(-8.0)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(4, 10, 7),)) < 1e-5
    names = dict(pruned.named_parameters())
    module = "layer.self_attn" if name.startswith("encoder") else "attn"
    assert not [n for n in names if n.startswith(module + ".")], sorted(names)
    exported = torch.export.export(pruned, (torch.randn(4, 6, 7),), dynamic_shapes=(
        {0: Dim("batch", min=2), 1: Dim("tokens", min=2)},))
    other = torch.randn(6, 11, 7)
    torch.testing.assert_close(exported.module()(other), pruned(other))


@pytest.mark.parametrize("name", list(CASES))
def test_smallest_model_shrinks_attention_projections(name):
    model, gated, group, heads, params = _compile(name)
    with torch.no_grad():
        for key, gate in lumos.gates(gated).items():
            gate.log_alpha.fill_(-8.0)
            if key in ("x", "embed"):          # one input feature and one stream channel:
                gate.log_alpha[0] = 6.0        # the output is not a constant
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(2, 5, 7),)) < 1e-5
    names = dict(pruned.named_parameters())
    kept = sum(names[p].numel() for p in params if p in names)
    # every head is closed: the attention sublayer is gone
    assert kept == 0, kept


def test_encoder_layer_trains_then_extracts_exactly():
    model, gated, group, heads, _ = _compile("encoder_layer", training=True)
    assert gated.training
    x = torch.randn(3, 6, 7)
    loss = gated(x).square().mean() + lumos.penalty(gated)
    loss.backward()
    assert lumos.gates(gated)[group].log_alpha.grad.abs().sum() > 0
    randomize_gates(gated, seed=7)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, (torch.randn(4, 8, 7),)) < 1e-5


@pytest.mark.parametrize("batch_first", [True, False])
def test_decoder_layer_gates_self_and_cross_attention_heads(batch_first):
    torch.manual_seed(0)
    model = TorchDecoder(batch_first=batch_first).eval()
    tgt, memory = torch.randn(3, 6, 7), torch.randn(3, 4, 7)
    # one batch for both inputs: with two batch symbols export sizes the attention output
    # 4 * (8 * B_memory // B_tgt), a channel count lumos cannot gate (it pins)
    batch = Dim("batch", min=2)
    gated = lumos.compile(model, example_inputs=(tgt, memory), dynamic_shapes=(
        {0: batch, 1: Dim("tokens", min=2)}, {0: batch, 1: Dim("memory", min=2)}))
    groups = {g.name: g for g in lumos.report(gated).groups}
    for name in ("layer.self_attn", "layer.multihead_attn"):
        assert groups[name].pinned is None and groups[name].total == HEADS
    with torch.no_grad():
        lumos.gates(gated)["layer.multihead_attn"].log_alpha[[0, 2]] = -8.0
    pruned = lumos.extract(gated)
    # cross-attention: two heads gone from the query rows and the key/value rows
    assert pruned.get_parameter("layer.multihead_attn.in_proj_weight").shape[0] == 3 * DIM // 2
    assert pruned.get_parameter("layer.multihead_attn.out_proj.weight").shape[1] == DIM // 2
    other = (torch.randn(2, 9, 7), torch.randn(2, 5, 7))
    assert lumos.verify(gated, pruned, other) < 1e-5
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, other) < 1e-5
    exported = torch.export.export(pruned, other, dynamic_shapes=(
        {0: batch, 1: Dim("tokens", min=2)}, {0: batch, 1: Dim("memory", min=2)}))
    torch.testing.assert_close(exported.module()(*other), pruned(*other))


def test_an_unpacked_split_keeps_heads_and_not_the_qkv_index():
    """``(3C) -> (3, H, D)``: the 3 is taken apart by ``unbind``, so the heads get the labels."""
    _, gated, _, _, _ = _compile("timm_unbind_sdpa")
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["attn.qkv"].total == HEADS and not any(
        "unbind" in (g.pinned or "") for g in groups.values())


def test_fused_fast_path_pins_with_its_name():
    from lumos_fx.rules import REGISTRY
    from lumos_fx.rules.attention import fast_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = getattr(torch.ops.aten, "_native_multi_head_attention", None)
    if op is None:
        pytest.skip("no fused attention op in this torch")
    assert REGISTRY.find(op.default) is fast_path
