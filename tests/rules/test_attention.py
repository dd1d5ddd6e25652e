"""Attention: whole heads, the residual stream through LayerNorm, class and position tokens."""
from __future__ import annotations

import pytest
import torch

import lumos_fx as lumos
from tests.models.transformers_like import TinyViT
from tests.test_exactness_zoo import randomize_gates


def test_vit_prunes_heads_ffn_and_residual_stream_exactly():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(3, 8, 12)
    gated = lumos.compile(model, example_inputs=(x,))
    gates = {key: gate.log_alpha.numel() for key, gate in lumos.gates(gated).items()}
    assert gates["embed"] == 32                          # the residual stream
    assert gates["blocks_0_q"] == 4 and gates["blocks_1_q"] == 4    # whole heads
    assert gates["blocks_0_fc1"] == 64
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        lumos.gates(gated)["blocks_0_q"].log_alpha[1] = -6.0          # one head
        lumos.gates(gated)["embed"].log_alpha[:6] = -6.0              # six stream channels
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("blocks.0.q.weight").shape == (24, 26)
    assert pruned.get_parameter("blocks.0.proj.weight").shape[1] == 24
    assert pruned.get_parameter("cls_token").shape == (1, 1, 26)
    assert pruned.get_parameter("pos_embed").shape == (1, 9, 26)
    assert lumos.verify(gated, pruned, (torch.randn(5, 8, 12),)) < 1e-5
    randomize_gates(gated, seed=3)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(5, 8, 12),)) < 1e-5


def test_hugging_face_bert_gates_whole_heads():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64)).eval()
    ids = torch.randint(0, 100, (2, 16))
    gated = lumos.compile(model, example_inputs=(ids,))
    assert lumos.gates(gated)["encoder_layer_0_attention_self_query"].log_alpha.numel() == 4
    randomize_gates(gated, seed=1)
    other = torch.randint(0, 100, (3, 11))               # another batch and sequence length
    assert lumos.verify(gated, lumos.extract(gated), (other,)) < 1e-5
