"""Batch norms of the extracted model follow ``.train()``/``.eval()``, as the user's did.

``extract`` rewrites the *eval* graph, where every batch norm is baked in with
``training=False``: fine-tuning the extracted model in train mode would then normalise
with the running statistics of the model before pruning and never update them, which
after channels were removed from the layers feeding it is quietly not what the user's
model does (and trains worse). This pass replaces each such call by a
:class:`ModeBatchNorm` submodule that reads the extracted model's mode: in eval it
calls exactly the op the graph called (so the model stays exact against the gated
model), in train mode it uses batch statistics and updates the running ones with the
layer's momentum, as ``nn.BatchNorm*d`` does (a layer built with ``momentum=None``, a
cumulative average, keeps its running statistics as they are). ``torch.export`` of the extracted model
in eval mode sees the same ``batch_norm`` op as before.

Dropout is not restored: the eval graph has none, so the extracted model trains
without it.

Example::

    >>> import torch
    >>> from torch import nn
    >>> import lumos_fx as lumos
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> pruned = lumos.extract(lumos.compile(model, example_inputs=(torch.randn(2, 3, 6, 6),)))
    >>> x = torch.randn(8, 3, 6, 6)
    >>> torch.equal(pruned(x), model(x))
    True
    >>> torch.equal(pruned.train()(x), model.train()(x))
    True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["ModeBatchNorm", "batch_norm_follows_mode"]


class ModeBatchNorm(nn.Module):
    """``batch_norm(x, weight, bias, running_mean, running_var)`` with the statistics
    the module's mode calls for (batch ones, updating the running ones, in train mode)."""

    def __init__(self, momentum: float, eps: float, cudnn_enabled: bool):
        super().__init__()
        self.momentum, self.eps, self.cudnn_enabled = float(momentum), float(eps), cudnn_enabled

    def forward(self, x, weight, bias, running_mean, running_var):
        if not self.training:
            return torch.batch_norm(x, weight, bias, running_mean, running_var, False,
                                    self.momentum, self.eps, self.cudnn_enabled)
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, self.momentum,
                            self.eps)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, eps={self.eps}"


def _is_eval_batch_norm(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in (
            torch.batch_norm, torch.ops.aten.batch_norm.default):
        return False
    training = node.args[5] if len(node.args) > 5 else node.kwargs.get("training")
    running = node.args[3:5] if len(node.args) > 4 else ()
    # only layers that keep running statistics (buffers) can switch to batch statistics
    return training is False and len(running) == 2 and all(
        isinstance(r, fx.Node) and r.op == "get_attr" for r in running)


def batch_norm_follows_mode(gm: fx.GraphModule) -> int:
    """Swap every eval-mode batch norm with running statistics in ``gm`` for a
    :class:`ModeBatchNorm`; returns how many (``gm`` is recompiled when any)."""
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_eval_batch_norm(node):
            continue
        args = list(node.args) + [None] * (9 - len(node.args))
        x, weight, bias, running_mean, running_var, _, momentum, eps, cudnn = args
        momentum = node.kwargs.get("momentum", momentum)
        eps = node.kwargs.get("eps", eps)
        name = f"lumos_bn_{count}"
        while hasattr(gm, name):
            name += "_"
        gm.add_submodule(name, ModeBatchNorm(0.1 if momentum is None else momentum,
                                             1e-5 if eps is None else eps, bool(cudnn)))
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name, (x, weight, bias, running_mean, running_var))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.recompile()
    return count
