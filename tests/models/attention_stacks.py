"""Random transformer stacks for the attention property test.

A :class:`StackSpec` names every choice: the attention kind (separate ``q/k/v``
with SDPA or the manual ``softmax(q @ k^T * scale) @ v`` and a GQA ratio of 1
or 2 copied by ``repeat_interleave`` or ``expand``; timm's packed ``qkv``;
``nn.MultiheadAttention``; a whole ``nn.TransformerEncoderLayer``), pre- or
post-norm with LayerNorm or RMSNorm, an optional class token and position
embedding, depth, heads, head size and FFN width. :func:`stack_specs` draws
them with hypothesis; :class:`AttentionStack` builds the model.

Example::

    >>> import torch
    >>> spec = StackSpec(kind="separate", depth=2, heads=2, head_dim=4, kv_ratio=2)
    >>> model = AttentionStack(spec).eval()
    >>> model(torch.randn(3, 5, spec.features)).shape
    torch.Size([3, 5, 3])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from tests.models.attention_blocks import GroupedQueryAttention, PackedAttention, TorchMHA

KINDS = ("separate", "packed", "mha", "encoder_layer")
MAX_TOKENS = 16         # length of the position embedding table (sliced to the sequence)


@dataclass(frozen=True)
class StackSpec:
    """One random transformer stack (see the module docstring)."""

    kind: str = "separate"
    depth: int = 1
    heads: int = 2
    head_dim: int = 4
    kv_ratio: int = 1               # query heads per key/value head ("separate" only)
    copies: str = "repeat_interleave"   # or "expand": how GQA copies key/value heads
    sdpa: bool = True               # False: q @ k.transpose(-2, -1) * scale, softmax, @ v
    norm: str = "layer"             # or "rms"
    norm_first: bool = True
    cls_token: bool = False
    pos_embed: bool = False
    hidden: int = 8                 # FFN width
    batch_first: bool = True        # nn.MultiheadAttention / TransformerEncoderLayer layout
    need_weights: bool = False      # nn.MultiheadAttention's explicit bmm path
    features: int = 5
    classes: int = 3

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


def _norm(spec: StackSpec) -> nn.Module:
    return nn.LayerNorm(spec.dim) if spec.norm == "layer" else nn.RMSNorm(spec.dim)


def _attention(spec: StackSpec) -> nn.Module:
    if spec.kind == "packed":
        return PackedAttention(spec.dim, spec.heads, sdpa=spec.sdpa)
    if spec.kind == "mha":
        return TorchMHA(spec.dim, spec.heads, spec.batch_first, spec.need_weights)
    return GroupedQueryAttention(spec.dim, spec.heads, spec.heads // spec.kv_ratio,
                                 spec.copies, sdpa=spec.sdpa)


class Block(nn.Module):
    """``x + attn(norm1(x))``, ``x + ffn(norm2(x))`` (pre-norm) or
    ``norm1(x + attn(x))``, ``norm2(x + ffn(x))`` (post-norm)."""

    def __init__(self, spec: StackSpec):
        super().__init__()
        self.norm_first = spec.norm_first
        self.attn = _attention(spec)
        self.norm1, self.norm2 = _norm(spec), _norm(spec)
        self.fc1, self.fc2 = nn.Linear(spec.dim, spec.hidden), nn.Linear(spec.hidden, spec.dim)

    def ffn(self, x):
        return self.fc2(F.gelu(self.fc1(x)))

    def forward(self, x):
        if self.norm_first:
            x = x + self.attn(self.norm1(x))
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ffn(x))


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (dropout 0); it reads ``norm1.bias`` to choose its
    fast path, so its own norms stay LayerNorms (``spec.norm`` sets the final norm)."""

    def __init__(self, spec: StackSpec):
        super().__init__()
        self.batch_first = spec.batch_first
        self.layer = nn.TransformerEncoderLayer(spec.dim, spec.heads, spec.hidden, dropout=0.0,
                                                activation="gelu", batch_first=spec.batch_first,
                                                norm_first=spec.norm_first)

    def forward(self, x):
        if self.batch_first:
            return self.layer(x)
        return self.layer(x.transpose(0, 1)).transpose(0, 1)


class AttentionStack(nn.Module):
    """``embed -> [class token] -> [+ position embedding] -> blocks -> norm -> head``;
    the head reads the class token when there is one, else every token."""

    def __init__(self, spec: StackSpec, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.spec = spec
        self.embed = nn.Linear(spec.features, spec.dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, spec.dim)) if spec.cls_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, MAX_TOKENS, spec.dim)) \
            if spec.pos_embed else None
        make = EncoderLayer if spec.kind == "encoder_layer" else Block
        self.blocks = nn.ModuleList(make(spec) for _ in range(spec.depth))
        self.norm = _norm(spec)
        self.head = nn.Linear(spec.dim, spec.classes)

    def forward(self, x):
        h = self.embed(x)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        if self.pos_embed is not None:
            h = h + self.pos_embed[:, :h.shape[1]]
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return self.head(h[:, 0] if self.cls_token is not None else h)

    @staticmethod
    def make_input(spec: StackSpec, batch: int, tokens: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, tokens, spec.features, generator=g)


@st.composite
def stack_specs(draw, kind: str | None = None) -> StackSpec:
    """A random :class:`StackSpec` (of the given ``kind``, else of any)."""
    kind = kind or draw(st.sampled_from(KINDS))
    kv_ratio = draw(st.sampled_from((1, 2))) if kind == "separate" else 1
    heads = kv_ratio * draw(st.integers(1, 4 // kv_ratio))
    layout = kind in ("mha", "encoder_layer")
    return StackSpec(
        kind=kind, depth=draw(st.integers(1, 3)), heads=heads,
        head_dim=draw(st.sampled_from((2, 3, 4))), kv_ratio=kv_ratio,
        copies=draw(st.sampled_from(("repeat_interleave", "expand"))),
        sdpa=draw(st.booleans()) if kind in ("separate", "packed") else True,
        norm=draw(st.sampled_from(("layer", "rms"))), norm_first=draw(st.booleans()),
        cls_token=draw(st.booleans()), pos_embed=draw(st.booleans()),
        hidden=draw(st.integers(2, 12)),
        batch_first=draw(st.booleans()) if layout else True,
        need_weights=draw(st.booleans()) if kind == "mha" else False,
        features=draw(st.integers(2, 6)))
