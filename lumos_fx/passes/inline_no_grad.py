"""Inline the body of each ``with torch.no_grad():`` block into the captured graph.

``torch.export`` records such a block as one call of the higher-order op
``wrap_with_set_grad_enabled(False, body, *inputs)``, whose body is a graph of
its own. No rule sees into it, so every channel it read would pin: a running
input normalizer (``self.mean.mul_(0.99).add_(0.01 * x.mean(0))``) would pin
the input's features, a teacher's target the student's channels. Inlined, with
every input detached, the body's ops are ordinary nodes the rules read, and
they compute the same values with no gradient: a tensor the body reads (a
parameter, a buffer it updates in place, an input) is a detached alias of the
same memory, so in-place updates still land in the buffer. Blocks that turn
gradients on (``torch.enable_grad()``) stay as they are.

Example::

    >>> import torch
    >>> from lumos_fx.passes.inline_no_grad import inline_no_grad
    >>> class Normalizer(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_buffer("mean", torch.zeros(3))
    ...     def forward(self, x):
    ...         with torch.no_grad():
    ...             self.mean.mul_(0.9).add_(0.1 * x.mean(0))
    ...         return x - self.mean
    >>> gm = torch.export.export(Normalizer(), (torch.randn(4, 3),)).module()
    >>> inline_no_grad(gm)
    1
    >>> any("wrap_with_set_grad_enabled" in str(n.target) for n in gm.graph.nodes)
    False
"""
from __future__ import annotations

import operator

import torch
from torch import fx

_BLOCK = torch.ops.higher_order.wrap_with_set_grad_enabled


def inline_no_grad(gm: fx.GraphModule) -> int:
    """Inline every gradient-disabling block of ``gm`` in place; the number inlined."""
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _BLOCK or node.args[0] is not False:
            continue
        body = getattr(gm, node.args[1].target)
        if any(inner.op not in ("placeholder", "call_function", "output")
               for inner in body.graph.nodes):
            continue                    # (export hands a body everything as inputs)
        outputs = _inline(graph, node, body, node.args[2:])
        for user in list(node.users):
            if user.target is operator.getitem:
                user.replace_all_uses_with(outputs[user.args[1]])
                graph.erase_node(user)
        if not node.users:
            holder = node.args[1]
            graph.erase_node(node)
            if not holder.users:
                graph.erase_node(holder)
                delattr(gm, holder.target)
            count += 1
    if count:
        gm.recompile()
    return count


def _inline(graph: fx.Graph, node: fx.Node, body: fx.GraphModule, inputs) -> list:
    """Copy ``body``'s nodes before ``node``, its placeholders bound to detached
    ``inputs``; the copies of its outputs."""
    env: dict[fx.Node, object] = {}
    placeholders = iter(inputs)
    result = []
    with graph.inserting_before(node):
        for inner in body.graph.nodes:
            if inner.op == "placeholder":
                value = next(placeholders)
                if isinstance(value, fx.Node):
                    detached = graph.call_function(torch.ops.aten.detach.default, (value,))
                    detached.meta.update({k: v for k, v in value.meta.items()
                                          if k in ("tensor_meta", "val")})
                    value = detached
                env[inner] = value
            elif inner.op == "output":
                result = list(fx.node.map_arg(inner.args[0], lambda n: env[n]))
            else:
                env[inner] = graph.node_copy(inner, lambda n: env[n])
    return result
