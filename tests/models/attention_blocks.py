"""Attention written the other ways users write it: a packed ``qkv`` projection (timm),
torch's ``nn.MultiheadAttention`` and ``nn.Transformer*Layer``, grouped-query attention."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class PackedAttention(nn.Module):
    """timm's ``Attention``: ``qkv = Linear(C, 3C)``, ``reshape(B, N, 3, H, D).permute(2, 0,
    3, 1, 4)``, then ``unbind(0)`` (or ``qkv[0], qkv[1], qkv[2]``), SDPA or the manual
    ``softmax(q @ k^T * scale) @ v``, ``transpose(1, 2).reshape(B, N, C)``, ``proj``."""

    def __init__(self, dim: int, heads: int, sdpa: bool = True, index: bool = False):
        super().__init__()
        self.heads, self.sdpa, self.index = heads, sdpa, index
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (qkv[0], qkv[1], qkv[2]) if self.index else qkv.unbind(0)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class GroupedQueryAttention(nn.Module):
    """``heads`` query heads share ``kv_heads`` key/value heads, copied by
    ``repeat_interleave``, by Llama's ``k[:, :, None].expand(...).reshape(...)``, or
    left to SDPA's ``enable_gqa=True``; ``sdpa=False`` writes the attention out as
    ``softmax(q @ k^T * scale) @ v`` (``kv_heads == heads`` is plain attention)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, style: str = "repeat_interleave",
                 sdpa: bool = True):
        super().__init__()
        self.heads, self.kv_heads, self.style, self.sdpa = heads, kv_heads, style, sdpa
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, kv_heads * self.head_dim)
        self.v = nn.Linear(dim, kv_heads * self.head_dim)
        self.o = nn.Linear(dim, dim)

    def _copies(self, t):
        B, _, N, D = t.shape
        n = self.heads // self.kv_heads
        if n == 1:
            return t
        if self.style == "repeat_interleave":
            return t.repeat_interleave(n, dim=1)
        return t[:, :, None, :, :].expand(B, self.kv_heads, n, N, D).reshape(B, self.heads, N, D)

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.style == "enable_gqa":
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        elif self.sdpa:
            out = F.scaled_dot_product_attention(q, self._copies(k), self._copies(v))
        else:
            scores = (q @ self._copies(k).transpose(-2, -1)) * self.scale
            out = scores.softmax(dim=-1) @ self._copies(v)
        return self.o(out.transpose(1, 2).reshape(B, N, C))


class Residual(nn.Module):
    """``embed -> x + attention(norm(x)) -> x + mlp(norm(x)) -> head``: the block around
    any attention module."""

    def __init__(self, attention: nn.Module, features: int = 7, dim: int = 32, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = attention
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x)


class TorchMHA(nn.Module):
    """``nn.MultiheadAttention`` as self-attention; ``need_weights=True`` (its default)
    takes the explicit ``bmm`` path and averages the weights over heads."""

    def __init__(self, dim: int, heads: int, batch_first: bool = True, need_weights: bool = False):
        super().__init__()
        self.batch_first, self.need_weights = batch_first, need_weights
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=batch_first)

    def forward(self, x):
        x = x if self.batch_first else x.transpose(0, 1)
        out = self.mha(x, x, x, need_weights=self.need_weights)[0]
        return out if self.batch_first else out.transpose(0, 1)


class TorchEncoder(nn.Module):
    """``embed -> nn.TransformerEncoderLayer -> head`` (dropout active in training)."""

    def __init__(self, features: int = 7, dim: int = 32, heads: int = 4, batch_first: bool = True,
                 norm_first: bool = False, classes: int = 3):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(features, dim)
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1,
                                                batch_first=batch_first, norm_first=norm_first)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        x = x if self.batch_first else x.transpose(0, 1)
        x = self.layer(x)
        return self.head(x if self.batch_first else x.transpose(0, 1))


class TorchDecoder(nn.Module):
    """``nn.TransformerDecoderLayer`` over embedded targets, attending to an embedded memory
    (its cross-attention reads query rows and key/value rows of one packed weight)."""

    def __init__(self, features: int = 7, dim: int = 32, heads: int = 4, batch_first: bool = True,
                 classes: int = 3):
        super().__init__()
        self.batch_first = batch_first
        self.embed, self.memory = nn.Linear(features, dim), nn.Linear(features, dim)
        self.layer = nn.TransformerDecoderLayer(dim, heads, 2 * dim, dropout=0.1,
                                                batch_first=batch_first)
        self.head = nn.Linear(dim, classes)

    def forward(self, tgt, memory):
        tgt, memory = self.embed(tgt), self.memory(memory)
        if not self.batch_first:
            tgt, memory = tgt.transpose(0, 1), memory.transpose(0, 1)
        x = self.layer(tgt, memory)
        return self.head(x if self.batch_first else x.transpose(0, 1))
