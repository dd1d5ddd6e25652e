"""Shape propagation with errors that name the problem.

Runs :class:`torch.fx.passes.shape_prop.ShapeProp` on the example inputs,
which fills ``node.meta["tensor_meta"]``. When the model cannot run on the
example inputs, the error says which node failed and with what shapes.

Example::

    >>> import torch
    >>> from lumos_fx.passes.shape_prop import propagate_shapes
    >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    >>> propagate_shapes(gm, (torch.randn(4, 3),))
    >>> [tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op != "output"]
    [(4, 3), (4, 2)]
"""
from __future__ import annotations

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InputError


def describe_inputs(inputs) -> str:
    return ", ".join(f"{type(x).__name__}{tuple(x.shape)}" if isinstance(x, torch.Tensor)
                     else type(x).__name__ for x in inputs)


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    class _Prop(ShapeProp):
        def run_node(self, n):
            try:
                return super().run_node(n)
            except Exception as err:
                raise InputError(
                    f"the model fails on the example inputs ({describe_inputs(example_inputs)}) "
                    f"at `{n.format_node()}`: {err}. Pass example_inputs with the shapes and "
                    f"dtypes the model is called with, e.g. example_inputs=(x_batch,)."
                ) from err
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            _Prop(gm).propagate(*example_inputs)
    finally:
        gm.train(was_training)
