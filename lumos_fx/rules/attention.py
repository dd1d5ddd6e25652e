"""Rule for ``scaled_dot_product_attention``: whole heads live or die together.

``q, k, v`` arrive as ``(..., heads, tokens, head_dim)`` after the
``(C) -> (heads, head_dim)`` split (see :mod:`lumos_fx.rules.heads`; a packed
``qkv`` projection split as ``(3, heads, head_dim)`` gives the same), so the
heads dim carries one label per head of each projection. A head's query,
key and value rows are one channel: it is removed whole, and the output
projection's columns of that head go with it (the merge back to ``C`` repeats the
head's label over its ``head_dim`` positions). The head size does not change, so
the default scale ``1/sqrt(head_dim)`` stays right.

Grouped-query attention (``enable_gqa=True``, ``Hq = n * Hkv``): query head ``h``
reads key/value head ``h // n``, so a key/value head and its ``n`` query heads are
one channel; every kept key/value head keeps all of its query heads and the
ratio ``n`` stays. (With ``repeat_interleave``/``expand`` written out, the copies
already carry the key/value head's label and the head counts are equal here.) One
key/value head broadcast over all query heads (multi-query attention, Falcon) is
the case ``Hkv = 1``: the attention lives or dies whole.

Operands of rank 3, ``(batch, tokens, channels)``, are one head: its query, key
and value channels are one channel. An operand whose heads dim carries no labels
but whose ``head_dim`` does (one head: ``view(B, N, 1, D)`` factors onto ``D``;
or the copies of a single key/value head) is one head: its ``head_dim`` channels
are unified into one channel that labels every head, so the head lives or dies
whole and the scale stays. A mask broadcast over heads is fine; pruning inside a
head (``head_dim``) or across tokens pins. The fused fast paths of ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer`` (taken only without gradients, never by
``torch.export`` training capture) pin with their name.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.attention import attention
    >>> REGISTRY.find(torch.ops.aten.scaled_dot_product_attention.default) is attention
    True
"""
from __future__ import annotations

import numpy as np

from .registry import REGISTRY, aten, packets


@REGISTRY.ops(aten.scaled_dot_product_attention.default)
def attention(ctx, node):
    q, k, v = node.args[:3]
    mask = ctx.arg(node, 3, "attn_mask")
    gqa = bool(node.kwargs.get("enable_gqa", False))
    rank = len(ctx.shape(q))
    heads_dim = rank - 3
    operands = [q, k, v]
    if rank == 3:
        return _single_head(ctx, node, operands, mask)
    labels = [_as_one_head(ctx, node, ctx.of(t) or {}, ctx.shape(t), heads_dim)
              for t in operands]
    for lab in labels:
        for d, atoms in lab.items():
            if d != heads_dim:
                ctx.pin(atoms, f"{node.name}: attention over a channel dim (tokens or head_dim)")
    counts = [ctx.shape(t)[heads_dim] if rank >= 3 else None for t in operands]
    ratio = counts[0] // counts[1] if rank >= 3 and counts[1] else 0
    shared = rank >= 3 and counts[1] == 1         # one key/value head broadcast (multi-query)
    if rank < 3 or counts[1] != counts[2] or not (
            counts[0] == counts[1] or ((gqa or shared) and ratio * counts[1] == counts[0])):
        for lab in labels:
            ctx.pin(lab.get(heads_dim), f"{node.name}: attention with unequal head counts")
        return {}
    heads = [lab.get(heads_dim) for lab in labels]
    if heads[0] is not None and counts[0] != counts[1]:     # GQA: group the query heads
        blocks = heads[0].reshape(counts[1], ratio)
        for column in range(1, ratio):
            ctx.unify(blocks[:, 0], blocks[:, column], f"{node.name}: query heads of a kv head")
        heads = [blocks[:, 0].copy(), *heads[1:]]
    present = [h for h in heads if h is not None]
    if not present:
        return {}
    for h in present[1:]:
        ctx.unify(present[0], h, f"{node.name}: a head's query, key and value")
    if len(present) < len(heads) and counts[1] > 1:
        ctx.pin(present[0], f"{node.name}: attention with unlabeled heads")
    if mask is not None and hasattr(mask, "op"):
        mask_shape = ctx.shape(mask)
        offset = rank - len(mask_shape)
        mask_heads = (ctx.of(mask) or {}).get(heads_dim - offset) if heads_dim >= offset else None
        behind = (ctx.param_behind(mask, heads_dim - offset, counts[0])
                  if mask_heads is None and heads_dim >= offset else None)
        if behind is not None:       # a per-head bias table (Swin's relative positions)
            ctx.param(behind[0], {behind[1]: _query_heads(present[0], counts[0])})
        elif heads_dim >= offset and mask_shape[heads_dim - offset] != 1:
            if mask_heads is None or len(mask_heads) != counts[0]:
                ctx.pin(present[0], f"{node.name}: a per-head mask without labels")
            else:
                ctx.unify(_query_heads(present[0], counts[0]), mask_heads,
                          f"{node.name}: per-head mask")
    return {heads_dim: _query_heads(present[0], counts[0])}


def _single_head(ctx, node, operands, mask) -> dict:
    """``(batch, tokens, channels)`` operands: one head. Its query, key and value channels
    are one channel (the head lives or dies whole, so the scale stays); the output
    carries it on the value's channels. Labeled batch or token dims pin."""
    labels = [ctx.of(t) or {} for t in operands]
    for lab in labels:
        for d, atoms in lab.items():
            if d != 2:
                ctx.pin(atoms, f"{node.name}: attention over a channel dim (batch or tokens)")
    if mask is not None:
        ctx.pin_value(mask, f"{node.name}: a mask with channels")
    inner = [lab.get(2) for lab in labels]
    if all(i is None for i in inner):
        return {}
    if any(i is None for i in inner) or any((i < 0).any() for i in inner):
        for i in inner:
            ctx.pin(i, f"{node.name}: a head with unlabeled query, key or value channels")
        return {}
    for i in inner:
        ctx.unify(np.repeat(inner[0][:1], len(i)), i, f"{node.name}: a single head")
    return {2: inner[2]}


def _as_one_head(ctx, node, labels: dict, shape, heads_dim: int) -> dict:
    """Labels only on ``head_dim`` (all removable): one channel for the whole tensor,
    on its heads dim (every head of it lives or dies with it)."""
    inner = labels.get(heads_dim + 2)
    if heads_dim < 0 or set(labels) != {heads_dim + 2} or (inner < 0).any():
        return labels
    ctx.unify(inner[:1].repeat(len(inner) - 1), inner[1:], f"{node.name}: a single head")
    return {heads_dim: inner[:1].repeat(shape[heads_dim])}


def _query_heads(kv_heads, count: int):
    """Labels of the output's (query) heads: each key/value head's label repeated."""
    return np.repeat(kv_heads, count // len(kv_heads))


def fast_path(ctx, node):
    """A fused attention kernel: its packed weights are opaque to the rules."""
    ctx.pin_inputs(node, f"{node.name}: fused {node.target} (nn.MultiheadAttention/"
                         "TransformerEncoderLayer fast path); capture with gradients enabled")
    return None


REGISTRY.add(fast_path, packets("_native_multi_head_attention", "_transformer_encoder_layer_fwd"))
