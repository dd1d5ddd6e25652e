"""Rule for ``scaled_dot_product_attention``: whole heads live or die together.

``q, k, v`` arrive as ``(..., heads, tokens, head_dim)`` after the
``(C) -> (heads, head_dim)`` split (see :func:`lumos_fx.rules.shape.split_channels`),
so the heads dim carries one label per head of each projection. A head's query,
key and value rows are one channel: it is removed whole, and the output
projection's columns of that head go with it (the merge back to ``C`` repeats the
head's label over its ``head_dim`` positions). The head size does not change, so
the default scale ``1/sqrt(head_dim)`` stays right. A mask broadcast over heads
is fine; pruning inside a head (``head_dim``) or across tokens pins, as does
grouped-query attention with fewer key/value heads.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> from lumos_fx.rules.attention import attention
    >>> REGISTRY.find(torch.ops.aten.scaled_dot_product_attention.default) is attention
    True
"""
from __future__ import annotations

from .registry import REGISTRY, aten


@REGISTRY.ops(aten.scaled_dot_product_attention.default)
def attention(ctx, node):
    q, k, v = node.args[:3]
    mask = ctx.arg(node, 3, "attn_mask")
    rank = len(ctx.shape(q))
    heads_dim = rank - 3
    operands = [t for t in (q, k, v) if t is not None]
    labels = [ctx.of(t) or {} for t in operands]
    for t, lab in zip(operands, labels):
        for d, atoms in lab.items():
            if d != heads_dim:
                ctx.pin(atoms, f"{node.name}: attention over a channel dim (tokens or head_dim)")
    if rank < 3 or len({ctx.shape(t)[heads_dim] for t in operands}) != 1:
        for lab in labels:
            ctx.pin(lab.get(heads_dim), f"{node.name}: attention with unequal head counts")
        return {}
    heads = [lab.get(heads_dim) for lab in labels]
    present = [h for h in heads if h is not None]
    if not present:
        return {}
    for h in present[1:]:
        ctx.unify(present[0], h, f"{node.name}: a head's query, key and value")
    if len(present) < len(heads) and ctx.shape(q)[heads_dim] > 1:
        ctx.pin(present[0], f"{node.name}: attention with unlabeled heads")
    if mask is not None and hasattr(mask, "op"):
        mask_shape = ctx.shape(mask)
        offset = rank - len(mask_shape)
        mask_heads = (ctx.of(mask) or {}).get(heads_dim - offset) if heads_dim >= offset else None
        if heads_dim >= offset and mask_shape[heads_dim - offset] != 1:
            if mask_heads is None:
                ctx.pin(present[0], f"{node.name}: a per-head mask without labels")
            else:
                ctx.unify(present[0], mask_heads, f"{node.name}: per-head mask")
    return {heads_dim: present[0]}
