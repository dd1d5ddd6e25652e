"""A ViT-style encoder written as users write it: separate q/k/v, SDPA, class token."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, h):
        b, n, _ = h.shape
        y = self.norm1(h)
        q, k, v = (lin(y).view(b, n, self.heads, -1).transpose(1, 2)
                   for lin in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        h = h + self.proj(attended)
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class TinyViT(nn.Module):
    """Patch features -> linear embedding, class token, position embedding, blocks, head."""

    def __init__(self, patch_features: int = 12, patches: int = 8, dim: int = 32, heads: int = 4,
                 depth: int = 2, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(patch_features, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, 2 * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, patches):                       # (batch, patches, features)
        b = patches.shape[0]
        h = torch.cat([self.cls_token.expand(b, -1, -1), self.embed(patches)], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(h))[:, 0])
