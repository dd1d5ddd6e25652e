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


class WindowAttention(torch.nn.Module):
    """Swin's window attention: a per-head relative-position bias looked up from a table
    ``(positions, heads)``, plus (shifted windows) a mask of one head, given to
    ``scaled_dot_product_attention`` or added to written-out scores."""

    def __init__(self, sdpa: bool, shifted: bool, dim: int = 16, heads: int = 4, window: int = 3):
        super().__init__()
        self.sdpa, self.shifted, self.heads, self.n = sdpa, shifted, heads, window * window
        self.embed, self.qkv = torch.nn.Linear(5, dim), torch.nn.Linear(dim, 3 * dim)
        self.proj, self.head = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, 2)
        self.table = torch.nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())
        self.register_buffer("window_mask", torch.randn(2, self.n, self.n).clamp(max=0) * 50)

    def forward(self, x):                                     # (windows, n, 5)
        h = self.embed(x)
        b, n, c = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        if self.shifted:
            bias = bias + self.window_mask.repeat(b // 2, 1, 1).unsqueeze(1)
        if self.sdpa:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            out = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias).softmax(-1) @ v
        return self.head(h + self.proj(out.transpose(1, 2).reshape(b, n, c)))


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "scores"])
@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
def test_a_per_head_position_bias_table_is_sliced_with_its_heads(sdpa, shifted):
    torch.manual_seed(0)
    model = WindowAttention(sdpa, shifted).eval()
    x = torch.randn(4, 9, 5)
    gated = lumos.compile(model, example_inputs=(x,))
    assert lumos.gates(gated)["qkv"].log_alpha.numel() == 4, lumos.report(gated)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), model(x))
        lumos.gates(gated)["qkv"].log_alpha[[1, 2]] = -8.0
    pruned = lumos.extract(gated)
    assert pruned.table.shape == (25, 2) and pruned.qkv.weight.shape == (24, 16)
    assert lumos.verify(gated, pruned, (torch.randn(6, 9, 5),)) < 1e-5


class LatentQuery(torch.nn.Module):
    """A Perceiver's cross-attention: learned latents, expanded over the batch, are the
    query and the residual at once."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.inp, self.head = torch.nn.Linear(6, dim), torch.nn.Linear(dim, 3)
        self.latents = torch.nn.Parameter(torch.randn(4, dim))
        self.attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        kv, q = self.inp(x), self.latents.expand(x.shape[0], -1, -1)
        return self.head((q + self.attn(q, kv, kv, need_weights=False)[0]).mean(1))


def test_latents_read_as_query_and_residual_are_sliced_for_both_readers():
    """(Set Transformer's inducing points and DETR's object queries are read the same way.)"""
    from lumos_fx.prunability import smallest_fraction
    torch.manual_seed(0)
    model = LatentQuery().eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 5, 6),))
    assert smallest_fraction(gated) < 0.1, lumos.report(gated)
    with torch.no_grad():
        lumos.gates(gated)["inp"].log_alpha[:6] = -10.0        # the stream, latents included
    pruned = lumos.extract(gated)
    assert pruned.latents.shape == (4, 10) and pruned.attn.in_proj_weight.shape[1] == 10
    assert lumos.verify(gated, pruned, (torch.randn(3, 7, 6),)) < 1e-5


class SingleHead(torch.nn.Module):
    """Attention on ``(batch, tokens, channels)`` operands (no heads dim) in a residual
    block, then a head over the windows' tokens."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 16)
        self.q, self.k, self.v = (torch.nn.Linear(16, 8) for _ in range(3))
        self.proj, self.out = torch.nn.Linear(8, 16), torch.nn.Linear(16, 2)

    def forward(self, x):
        h = self.embed(x)
        a = torch.nn.functional.scaled_dot_product_attention(self.q(h), self.k(h), self.v(h))
        return self.out((h + self.proj(a)).mean(1))


def test_attention_of_rank_three_is_one_head_and_leaves_the_batch_unlabeled():
    torch.manual_seed(0)
    gated = lumos.compile(SingleHead().eval(), example_inputs=(torch.randn(2, 6, 3),))
    pins = {g.name: g.pinned for g in lumos.report(gated).groups}
    assert pins["embed"] is None and pins["q"] is None
    assert lumos.gates(gated)["q"].size == 1             # the head lives or dies whole
    randomize_gates(gated, seed=0)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(3, 6, 3),)) < 1e-5
    with torch.no_grad():
        lumos.gates(gated)["q"].log_alpha.fill_(-6.0)
    pruned = lumos.extract(gated)
    assert not any(name in dict(pruned.named_children()) for name in ("q", "k", "v", "proj"))
    assert lumos.verify(gated, pruned, (torch.randn(3, 6, 3),)) < 1e-5


class PaddedSetEncoder(torch.nn.Module):
    """``nn.TransformerEncoderLayer`` with a key padding mask, which attention expands
    over the heads with a literal head count (``mask.view(B, 1, 1, S).expand(-1, H, -1,
    -1)``)."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(5, 16), torch.nn.Linear(16, 1)
        self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x, padding):
        return self.out(self.layer(self.inp(x), src_key_padding_mask=padding).mean(1))


def _padded(batch: int, points: int, seed: int):
    padding = torch.zeros(batch, points, dtype=torch.bool)
    padding[0, -2:] = True
    return torch.randn(batch, points, 5, generator=torch.Generator().manual_seed(seed)), padding


def test_a_padding_mask_expanded_over_the_heads_keeps_the_heads_prunable():
    torch.manual_seed(0)
    model = PaddedSetEncoder().eval()
    gated = lumos.compile(model, example_inputs=_padded(2, 6, 0))
    groups = {g.name: g for g in lumos.report(gated).groups}
    assert groups["layer.self_attn"].pinned is None and groups["layer.self_attn"].total == 2
    other = _padded(3, 7, 1)
    torch.testing.assert_close(gated.eval()(*other), model(*other))
    with torch.no_grad():
        lumos.gates(gated)["layer.self_attn"].log_alpha[0] = -10.0
    pruned = lumos.extract(gated)
    assert pruned.layer.self_attn.in_proj_weight.shape == (24, 16)
    assert lumos.verify(gated, pruned, other) < 1e-5


def test_copies_of_one_entry_alone_are_not_a_group_to_prune():
    class Broadcast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 8)

        def forward(self, x):
            return self.lin(x).unsqueeze(1).expand(-1, 4, -1).sum(1)

    gated = lumos.compile(Broadcast(), example_inputs=(torch.randn(2, 3),))
    assert set(lumos.gates(gated)) == {"x"}, lumos.report(gated)
