"""Make the extracted graph cheap to call in eager PyTorch (the last step of ``extract``).

A captured graph calls ``torch.ops.aten.*`` overloads, flattens its inputs and
unflattens its outputs with pytree specs, and keeps eval-mode ``dropout`` calls
that return their input. Each costs a few microseconds per call, which is most of
the time of a small model at batch 1 (an MLP surrogate runs in ~40 us). This pass
rewrites the graph in place, without changing what it computes:

* aten overloads with a Python binding that runs the same kernel call the binding
  (``aten.linear.default`` -> ``torch._C._nn.linear``, ``aten.relu.default`` ->
  ``torch.relu``; ``index_select`` and ``narrow`` become tensor method calls, which
  ``import torch_geometric`` does not rebind); the overload call costs a second
  argument parsing against the op schema;
* ``dropout(x, p, train=False)`` and its variants become ``x``;
* the pytree input/output handling goes when the inputs are plain positional
  tensors and the output is a tensor or a tuple, list or dict of them.

``torch.export.export`` of the result records the same aten ops again.

Example::

    >>> import torch
    >>> from lumos_fx.capture import capture
    >>> from lumos_fx.passes.eager import lower_for_eager
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(), torch.nn.ReLU())
    >>> gm = capture(model, (torch.randn(2, 3),))[False]
    >>> lower_for_eager(gm)
    >>> [n.target.__name__ for n in gm.graph.nodes if n.op == "call_function"]
    ['linear', 'relu']
    >>> x = torch.randn(5, 3)
    >>> torch.equal(gm(x), model.eval()(x))
    True
"""
from __future__ import annotations

import torch
from torch import fx
from torch.fx.graph import CodeGen, _PyTreeCodeGen
from torch.utils import _pytree as pytree

__all__ = ["lower_for_eager", "EAGER_FUNCTIONS", "EAGER_METHODS"]

aten = torch.ops.aten

# overload -> Python binding that parses its arguments into that same overload
EAGER_FUNCTIONS = {
    aten.linear.default: torch._C._nn.linear,
    aten.conv1d.default: torch.conv1d,
    aten.conv2d.default: torch.conv2d,
    aten.conv3d.default: torch.conv3d,
    aten.relu.default: torch.relu,
    aten.sigmoid.default: torch.sigmoid,
    aten.tanh.default: torch.tanh,
    aten.gelu.default: torch._C._nn.gelu,
    aten.silu.default: torch._C._nn.silu,
    aten.add.Tensor: torch.add,
    aten.mul.Tensor: torch.mul,
    aten.batch_norm.default: torch.batch_norm,
    aten.max_pool2d.default: torch.max_pool2d,
    aten.adaptive_avg_pool2d.default: torch._C._nn.adaptive_avg_pool2d,
    aten.flatten.using_ints: torch.flatten,
    aten.cat.default: torch.cat,
}
# overload -> tensor method of the same name and arguments
EAGER_METHODS = {aten.index_select.default: "index_select", aten.narrow.default: "narrow"}
_EVAL_DROPOUT = (aten.dropout.default, aten.feature_dropout.default,
                 aten.alpha_dropout.default, aten.feature_alpha_dropout.default)


def _direct_calls(graph: fx.Graph) -> None:
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in EAGER_FUNCTIONS:
            node.target = EAGER_FUNCTIONS[node.target]
        elif node.target in EAGER_METHODS:
            node.op, node.target = "call_method", EAGER_METHODS[node.target]


def _drop_eval_dropout(graph: fx.Graph) -> None:
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _EVAL_DROPOUT:
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train")
            if train is False:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)


def _plain_structure(spec) -> bool:
    """A leaf, or tuples/lists/dicts (string keys) of plain structures."""
    if spec.is_leaf():
        return True
    if spec.type is dict and not all(isinstance(k, str) for k in spec.context):
        return False
    return spec.type in (tuple, list, dict) and all(_plain_structure(c)
                                                      for c in spec.children())


def _plain_codegen(graph: fx.Graph) -> None:
    codegen = graph._codegen
    if not isinstance(codegen, _PyTreeCodeGen) or codegen.pytree_info is None:
        return
    info = codegen.pytree_info
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if info.in_spec is not None:
        args, kwargs = info.in_spec.children() if info.in_spec.type is tuple and \
            info.in_spec.num_children == 2 else (None, None)
        if args is None or kwargs.num_children or args.num_children != len(placeholders) \
                or not all(c.is_leaf() for c in args.children()):
            return
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    if info.out_spec is not None:
        if not _plain_structure(info.out_spec):
            return
        output.args = (pytree.tree_unflatten(list(output.args[0]), info.out_spec),)
    graph._codegen = CodeGen()


def lower_for_eager(gm: fx.GraphModule) -> None:
    """Rewrite ``gm``'s graph for fast eager calls (see the module doc) and recompile."""
    _drop_eval_dropout(gm.graph)
    _direct_calls(gm.graph)
    _plain_codegen(gm.graph)
    gm.graph.lint()
    gm.recompile()
