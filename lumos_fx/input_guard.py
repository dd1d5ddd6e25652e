"""Refuse inputs whose sizes differ from the captured ones where the graph fixed them.

``torch.export`` captures every size it was not told is dynamic as a constant (by
default only the batch, a sequence's time dim and integer tensors are dynamic, see
:func:`lumos_fx.capture.default_dynamic_shapes`). A convolution accepts any length,
so a graph captured at length 32 and called at 64 may run without error and compute
something else: ``h.sum(-1) / h.shape[-1]`` divides by the captured 32. The exported
program checks its inputs; the graphs lumos runs (the gated model's, the extracted
model's) check them with an :class:`InputShapes`, which raises an ``InputError``
naming the input, the dim and the ``dynamic_shapes`` fix.

Example::

    >>> import torch
    >>> from lumos_fx.input_guard import InputShapes
    >>> guard = InputShapes(["x"], [(None, 4, 32)])
    >>> guard.check([torch.zeros(7, 4, 32)])
    >>> guard.check([torch.zeros(7, 4, 64)])
    Traceback (most recent call last):
    ...
    lumos_fx.errors.InputError: input 'x' has size 64 in dim 2, but the model was captured with size 32 there ...
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import fx, nn
from torch.fx._pytree import tree_flatten_spec
from torch.fx.node import has_side_effect
from torch.utils._pytree import tree_flatten, tree_unflatten

from .errors import InputError
from .verify import relative_error

__all__ = ["InputShapes"]


class InputShapes:
    """The fixed sizes of a graph's inputs, in placeholder order.

    Args:
        names: the inputs' names (the placeholders' targets).
        shapes: per input, its sizes with ``None`` where a size is free, or ``None``
            for an input that is not a tensor (not checked).
        positional: whether the graph module is called with its inputs as plain
            positional arguments (else ``check_call`` flattens a call's arguments with
            the module's pytree spec).
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple | None],
                 positional: bool = True):
        self.names = tuple(names)
        self.shapes = tuple(None if s is None else tuple(s) for s in shapes)
        self.positional = positional
        # (position, rank, ((dim, size), ...)) of every input with a fixed size
        self.fixed = tuple((i, len(s), tuple((d, n) for d, n in enumerate(s) if n is not None))
                           for i, s in enumerate(self.shapes) if s is not None)

    @classmethod
    def from_graph(cls, gm: fx.GraphModule):
        """The sizes of ``gm``'s placeholders as captured (``node.meta["tensor_meta"]``),
        free where ``node.meta["lumos"]["symbolic"]`` says the size is dynamic (see
        :meth:`freeing` for more)."""
        names, shapes = [], []
        for node in gm.graph.nodes:
            if node.op != "placeholder":
                continue
            names.append(node.target)
            meta = node.meta.get("tensor_meta")
            if meta is None or not hasattr(meta, "shape"):
                shapes.append(None)
                continue
            dynamic = set(node.meta.get("lumos", {}).get("symbolic", {}))
            shapes.append(tuple(None if d in dynamic else int(n)
                                for d, n in enumerate(meta.shape)))
        spec = getattr(gm, "_in_spec", None)
        return cls(names, shapes, spec is None or _flat_positional(spec, len(names)))

    def freeing(self, dims: dict[str, Sequence[int]]) -> "InputShapes":
        """This guard with the given dims (per input name) free."""
        shapes = [s if s is None else tuple(None if d in dims.get(name, ()) else n
                                            for d, n in enumerate(s))
                  for name, s in zip(self.names, self.shapes)]
        return InputShapes(self.names, shapes, self.positional)

    def merged(self, other: "InputShapes") -> "InputShapes":
        """One guard for two graphs over the same inputs (train and eval): a size is
        free only where it is free in both."""
        shapes = [a if b is None else b if a is None else
                  tuple(n if m is None else m for n, m in zip(a, b))
                  for a, b in zip(self.shapes, other.shapes)]
        return InputShapes(self.names, shapes, self.positional and other.positional)

    def freeing_generic_dims(self, model: nn.Module, gm: fx.GraphModule, args: tuple,
                             requested: Sequence[Sequence[int]]) -> "InputShapes":
        """This guard with the fixed dims that were ``requested`` dynamic (per flat input)
        but came out constant left free where the graph is generic in them: with that
        dim one longer (its last slice repeated), ``gm`` computes what ``model`` does.
        An op's fake kernel can fix a size the graph never reads (``aten.lstm`` fixes the
        time dim); a size the code computes with (``x.sum(1) / x.shape[1]``) fails this.
        ``model`` runs in eval mode without gradients; its mode is restored."""
        flat, spec = tree_flatten(args)
        if len(flat) != len(self.names):
            return self
        shapes = list(self.shapes)
        for i, dims in enumerate(requested):
            for d in dims:
                if shapes[i] is not None and d < len(shapes[i]) and shapes[i][d] is not None \
                        and runs_at_another_size(model, gm, flat, spec, i, d):
                    shapes[i] = shapes[i][:d] + (None,) + shapes[i][d + 1:]
        return InputShapes(self.names, shapes, self.positional)

    def check_call(self, gm: fx.GraphModule, args: tuple, kwargs: dict) -> None:
        """Check the inputs of a call ``gm(*args, **kwargs)``."""
        if self.positional and not kwargs and len(args) == len(self.names):
            self.check(args)
        else:
            self.check(tree_flatten_spec((args, kwargs), gm._in_spec))

    def check(self, inputs: Sequence) -> None:
        """Check the flat inputs, in placeholder order."""
        _check(self.names, self.fixed, inputs)

    def insert_into(self, gm: fx.GraphModule) -> None:
        """Make ``gm``'s graph check its inputs first (a graph that nothing rewrites any
        more: the extracted model); cheaper per call than a forward hook."""
        if not self.fixed:
            return
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        with gm.graph.inserting_after(placeholders[-1]):     # the guard itself: constants
            gm.graph.call_function(check_inputs, (self.names, self.fixed, *placeholders))
        gm.recompile()


@has_side_effect
def check_inputs(names: tuple, fixed: tuple, *inputs) -> None:
    """:meth:`InputShapes.check` as a call in a graph (dead-code elimination keeps it):
    ``names`` and ``fixed`` are the guard's, literal tuples in the generated code."""
    _check(names, fixed, inputs)


def _check(names: tuple, fixed: tuple, inputs: Sequence) -> None:
    for i, rank, sizes in fixed:
        x = inputs[i]
        if not isinstance(x, torch.Tensor):
            continue
        shape = x.shape
        if len(shape) != rank:
            raise InputError(f"input {names[i]!r} has {len(shape)} dims, but the model was "
                             f"captured from an example with {rank}")
        for d, n in sizes:
            if shape[d] != n:
                spec = "{0: Dim.DYNAMIC}" if d == 0 else f"{{0: Dim.AUTO, {d}: Dim.DYNAMIC}}"
                raise InputError(
                    f"input {names[i]!r} has size {shape[d]} in dim {d}, but the model was "
                    f"captured with size {n} there and its graph holds that size as a constant "
                    f"(at another size it could compute something else without an error). If "
                    f"this size really varies, compile from an example "
                    f"{'whose size there is not 0 or 1 ' if n < 2 else ''}with dim {d} marked "
                    f"dynamic: dynamic_shapes=({spec},) with Dim = torch.export.Dim (one "
                    f"dict per input; with Dim.DYNAMIC, capture fails when the code fixes "
                    f"the size, where Dim.AUTO lets it stay fixed)")


def runs_at_another_size(model: nn.Module, gm: nn.Module, flat: list, spec, i: int,
                         d: int) -> bool:
    """Whether ``gm`` computes what ``model`` does with flat input ``i`` (of the
    arguments ``tree_unflatten(flat, spec)``) one longer in dim ``d``."""
    x = flat[i]
    inputs = list(flat)
    inputs[i] = torch.cat([x, x.narrow(d, x.shape[d] - 1, 1)], d)
    args = tree_unflatten(inputs, spec)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(*args)
            actual = gm(*args)
        return relative_error(expected, actual) < 1e-4
    except Exception:          # either side refuses the size: it stays fixed
        return False
    finally:
        model.train(was_training)


def _flat_positional(in_spec, count: int) -> bool:
    """Whether ``in_spec`` is ``((leaf, ..., leaf), {})`` with ``count`` leaves."""
    if in_spec.num_children != 2:
        return False
    args_spec, kwargs_spec = in_spec.children()
    return (args_spec.num_children == count and all(c.is_leaf() for c in args_spec.children())
            and kwargs_spec.num_children == 0)
