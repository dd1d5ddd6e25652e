"""Rules for grouped matrix products: the experts of a mixture-of-experts layer.

``grouped_mm(x, w, offs)`` with ``x`` of shape ``(T, H)`` (tokens sorted by
expert), ``w`` of shape ``(E, H, O)`` (every expert's weight, a view of one
parameter) and ``offs`` the cumulative token counts per expert: token ``t``
multiplies the weight of its expert, giving ``(T, O)``. Over channels that is
``einsum("th,eho->to")`` in which ``e`` selects instead of summing, so
:func:`~lumos_fx.rules.einsum.contract` handles it: ``H`` is gated at ``x`` and
folds into every expert's weight, ``O`` are new channels that the experts share
(index ``i`` of every expert lives or dies together, as Hugging Face's fused
``gate_up_proj``/``down_proj`` store them), and the experts themselves are never
removed. Hugging Face's ``transformers::grouped_mm_fallback`` (its CPU path) has
this form; any other operand rank pins. ``aten._grouped_mm`` (its GPU
path) has no rule yet: its kernels need 16-byte aligned widths, which a pruned
width may not be, so it pins.

Example::

    >>> import torch
    >>> from lumos_fx.rules import REGISTRY
    >>> REGISTRY.find(torch.ops.aten._grouped_mm.default) is None
    True
"""
from __future__ import annotations

from .einsum import contract
from .registry import REGISTRY


@REGISTRY.named("transformers::grouped_mm_fallback")
def grouped_mm(ctx, node):
    x, weight = node.args[:2]
    if [len(ctx.shape(a) or ()) for a in (x, weight)] != [2, 3]:
        ctx.pin_inputs(node, f"{node.name}: a grouped matrix product of operands other "
                             "than (tokens, in) and (experts, in, out)")
        return {}
    return contract(ctx, node, [x, weight], [0, 1], ["tj", "ejk"], "tk", selects="e")
