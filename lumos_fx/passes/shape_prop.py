"""Shape propagation with errors that name the problem.

Runs :class:`torch.fx.passes.shape_prop.ShapeProp` on the example inputs,
which fills ``node.meta["tensor_meta"]`` with the concrete shapes of this
batch. Running a train-mode graph updates batch-norm statistics in place, so
buffers are restored afterwards (and the random-number state too). When the
model cannot run on the example inputs, the error says which node failed and
with what shapes.

Example::

    >>> import torch
    >>> from lumos_fx.passes.shape_prop import propagate_shapes
    >>> from lumos_fx.capture import capture
    >>> gm = capture(torch.nn.Sequential(torch.nn.Linear(3, 2)), (torch.randn(4, 3),))[False]
    >>> propagate_shapes(gm, (torch.randn(4, 3),))
    >>> [tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op == "call_function"]
    [(4, 2)]
"""
from __future__ import annotations

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InputError


def describe_inputs(inputs) -> str:
    return ", ".join(f"{type(x).__name__}{tuple(x.shape)}" if isinstance(x, torch.Tensor)
                     else type(x).__name__ for x in inputs)


class _Prop(ShapeProp):
    def __init__(self, gm, example_inputs):
        super().__init__(gm)
        self.example_inputs = example_inputs

    def run_node(self, n):
        try:
            return super().run_node(n)
        except Exception as err:
            cause, seen = err, {id(err)}    # ShapeProp wraps the op's error in a message
            while cause.__cause__ is not None and id(cause.__cause__) not in seen:  # with all meta
                cause = cause.__cause__
                seen.add(id(cause))
            where = n.meta.get("stack_trace", "").strip().splitlines()
            source = f" (model code: {where[-2].strip()} {where[-1].strip()})" if len(where) > 1 \
                else ""
            raise InputError(
                f"the model fails on the example inputs "
                f"({describe_inputs(self.example_inputs)}) at `{n.format_node()}`{source}: "
                f"{type(cause).__name__}: {cause}. Pass example_inputs with the shapes and dtypes the model is called "
                f"with, e.g. example_inputs=(x_batch,).") from err


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    """Fill ``tensor_meta`` by running ``gm`` once; its state is left as it was."""
    saved = {name: b.detach().clone() for name, b in gm.named_buffers()}
    rng = torch.random.get_rng_state()
    try:
        with torch.no_grad():
            _Prop(gm, example_inputs).propagate(*example_inputs)
    finally:
        torch.random.set_rng_state(rng)
        with torch.no_grad():
            for name, buffer in gm.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])
