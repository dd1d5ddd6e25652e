"""Attention: whole heads, the residual stream through LayerNorm, class and position tokens."""
from __future__ import annotations

import pytest
import torch

import lumos_fx as lumos
from tests.models.attention_stacks import AttentionStack, StackSpec
from tests.models.transformers_like import TinyViT
from tests.test_exactness_zoo import randomize_gates


def test_vit_prunes_heads_ffn_and_residual_stream_exactly():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(3, 8, 12)
    gated = lumos.compile(model, example_inputs=(x,))
    gates = {key: gate.log_alpha.numel() for key, gate in lumos.gates(gated).items()}
    assert gates["embed"] == 32                          # the residual stream
    assert gates["blocks.0.q"] == 4 and gates["blocks.1.q"] == 4    # whole heads
    assert gates["blocks.0.fc1"] == 64
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model(x))
        lumos.gates(gated)["blocks.0.q"].log_alpha[1] = -6.0          # one head
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
    assert lumos.gates(gated)["encoder.layer.0.attention.self.query"].log_alpha.numel() == 4
    randomize_gates(gated, seed=1)
    other = torch.randint(0, 100, (3, 11))               # another batch and sequence length
    assert lumos.verify(gated, lumos.extract(gated), (other,)) < 1e-5


class ManualAttention(torch.nn.Module):
    """Attention written out: q @ k^T * scale, softmax, @ v, a head count from an attribute."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.embed = torch.nn.Linear(7, dim)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(dim, dim) for _ in range(4))
        self.readout = torch.nn.Parameter(torch.randn(dim, 5))

    def forward(self, x):
        x = self.embed(x)
        b, n, c = x.shape
        q, k, v = (lin(x).reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)
                   for lin in (self.q, self.k, self.v))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return (x + self.o(out)) @ self.readout


def test_manual_attention_with_matmul_prunes_heads_and_stream():
    torch.manual_seed(0)
    model = ManualAttention().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(3, 6, 7),))
    assert lumos.gates(gated)["q"].log_alpha.numel() == 4
    assert lumos.gates(gated)["embed"].log_alpha.numel() == 32
    with torch.no_grad():
        lumos.gates(gated)["q"].log_alpha[[0, 3]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("k.weight").shape[0] == 16
    assert lumos.verify(gated, pruned, (torch.randn(5, 9, 7),)) < 1e-5
    randomize_gates(gated, seed=2)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(5, 6, 7),)) < 1e-5


def _stack(**options):
    spec = StackSpec(**options)
    model = AttentionStack(spec).eval()
    gated = lumos.compile(model, example_inputs=(AttentionStack.make_input(spec, 4, 6, 1),))
    return spec, model, gated


@pytest.mark.parametrize("kind", ["separate", "packed", "mha"])
def test_a_single_head_is_one_channel(kind):
    """``view(B, N, 1, D)`` factors onto ``D``; SDPA makes the head one channel."""
    spec, model, gated = _stack(kind=kind, heads=1, head_dim=4)
    name = {"separate": "blocks.0.attn.q", "packed": "blocks.0.attn.qkv",
            "mha": "blocks.0.attn.mha"}[kind]
    assert lumos.gates(gated)[name].log_alpha.numel() == 1
    with torch.no_grad():
        lumos.gates(gated)[name].log_alpha.fill_(-8.0)
    pruned = lumos.extract(gated)
    assert not [n for n, _ in pruned.named_parameters() if n.startswith("blocks.0.attn.")]
    assert lumos.verify(gated, pruned, (AttentionStack.make_input(spec, 3, 9, 2),)) < 1e-5


def test_a_position_table_cut_to_the_sequence_is_sliced_with_the_stream():
    """``h + pos[:, :h.shape[1]]``: the slice is along tokens, so ``pos`` follows the stream."""
    spec, model, gated = _stack(kind="separate", heads=2, head_dim=4, pos_embed=True,
                                cls_token=True)
    with torch.no_grad():
        lumos.gates(gated)["embed"].log_alpha[:3] = -8.0
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("pos_embed").shape == (1, 16, spec.dim - 3)
    assert lumos.verify(gated, pruned, (AttentionStack.make_input(spec, 3, 9, 2),)) < 1e-5
