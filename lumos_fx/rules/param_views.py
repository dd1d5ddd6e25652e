"""Which parameter, and which of its dims, a tensor in the graph holds.

A rule meets parameters through the views a model takes of them: a transpose
(``x @ w.t()``), a cast, one of a stack (``w[t]``), a lookup into a table
(``table[index].view(n, n, -1)``), ``1 + w``. :class:`ParameterViews` (mixed
into :class:`~lumos_fx.rules.context.RuleContext`) walks such a chain back to its
``get_attr`` and says, for each dim of the tensor, which parameter dim it holds
whole, so the rule can slice the parameter along it (or fold a gate into it, for
the linear views only).

Example::

    >>> from lumos_fx.rules.param_views import reshaped_dims
    >>> reshaped_dims([0, 1], source=(16, 4), target=(4, 4, 4), sizes=[4, 4, -1])
    [None, None, 1]
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx

from .registry import packets

#: ops that hand on their input's values unchanged, dims in place (casts and copies)
COPIES = frozenset(packets("clone", "_to_copy", "to", "contiguous", "alias", "detach"))


def is_copy(node: Any, also=frozenset()) -> bool:
    """Whether ``node`` is one of :data:`COPIES` (or of the packets in ``also``)."""
    packet = getattr(getattr(node, "target", None), "overloadpacket", None)
    return isinstance(node, fx.Node) and node.op == "call_function" and (
        packet in COPIES or packet in also)


class ParameterViews:
    """The parameter-view queries of a rule context (needs ``attr`` and ``shape``)."""

    def param_behind(self, value: Any, dim: int, size: int) -> tuple[str, int] | None:
        """``(path, param dim)`` when ``value`` is a parameter seen through the views of
        :meth:`weight_view` (a class token ``cls.expand(B, -1, -1)``, a position table cut
        to the sequence ``pos[:, :n]``, a bias picked from a stack ``b[0]``) and its ``dim``
        is the whole of that parameter dim, with ``size`` entries; else None. (Another
        op reading the same view unsliced pins the channels afterwards: see
        :mod:`lumos_fx.passes.param_reads`.)"""
        view, shape = self.weight_view(value, pointwise=True), self.shape(value)
        if view is None or shape is None or not -len(shape) <= dim < len(shape) or \
                shape[dim] != size:
            return None
        path, dims = view
        return None if dims[dim] is None else (path, dims[dim])

    def parameter_channels(self, node: fx.Node, path: str, param_dim: int, size: int):
        """The channels of parameter ``path`` along ``param_dim`` where no layer made them:
        one set per parameter dim (a learned query, Swin's per-head bias table)."""
        owner = path.rpartition(".")[0]
        return self.produce(node, size, kind="factory", key=f"{path}:{param_dim}",
                            name=owner or path)

    def read_parameter_channels(self, node: fx.Node, value: Any, dim: int, size: int):
        """The channels of ``value``'s ``dim`` when ``value`` is a view of a whole
        parameter dim (a Perceiver's or DETR's learned queries ``latents.expand(B, -1, -1)``
        read by a linear layer), registered as that parameter's; else None."""
        behind = self.param_behind(value, dim, size)
        if behind is None:
            return None
        labels = self.parameter_channels(node, *behind, size)
        self.param(behind[0], {behind[1]: labels})
        return labels

    def weight_in_place(self, value: Any) -> str | None:
        """The path of the parameter ``value`` is, directly or through casts and views that
        keep every dim in place (``w.squeeze(1).unsqueeze(1)``, ``w.to(dtype)``), else None:
        a layer's weight, which a gate may multiply or fold into."""
        view = self.weight_view(value)
        if view is None:
            return None
        path, dims = view
        full, shape = self.shape(self.param_node(value)), self.shape(value)
        in_place = len(shape) == len(full) and all(
            d == i or shape[i] == full[i] == 1 for i, d in enumerate(dims))
        return path if in_place else None

    def weight_view(self, value: Any, pointwise: bool = False
                    ) -> tuple[str, list[int | None]] | None:
        """``(path, dims)`` when ``value`` is a parameter or buffer, directly or through
        casts, ``expand``, transposes (``w.t()``, ``w.T``, ``w.mT``, ``transpose``,
        ``permute``), ``select``, ``squeeze``/``unsqueeze`` and slices: ``dims[d]`` is the
        parameter dim that ``value``'s dim ``d`` holds all of, None where it holds part
        of one (a slice) or a dim the parameter does not have. None for any other
        tensor. With ``pointwise``, also through pointwise ops with scalars (Gemma's
        ``1 + w``): fine to slice along, not to fold a gate into."""
        view = self._view_dims(value, pointwise)
        if view is None:
            return None
        path, dims = view
        full, shape = self.shape(self.param_node(value)), self.shape(value) or ()
        return path, [d if d is not None and full[d] == size else None
                      for d, size in zip(dims, shape)]

    def param_node(self, value: Any) -> fx.Node:
        """The ``get_attr`` node behind a :meth:`weight_view`."""
        while self.attr(value) is None:
            value = value.args[0]
        return value

    def _view_dims(self, value: Any, pointwise: bool) -> tuple[str, list[int | None]] | None:
        path = self.attr(value)
        if path is not None:
            return path, list(range(len(self.shape(value) or ())))
        if not isinstance(value, fx.Node) or value.op != "call_function" or not value.args:
            return None
        inner = self._view_dims(value.args[0], pointwise)
        shape = self.shape(value)
        if inner is None or shape is None:
            return None
        path, dims = inner
        name = getattr(getattr(value.target, "overloadpacket", None), "__name__", "")
        rank = len(dims)
        if is_copy(value) or name == "slice" or (
                pointwise and torch.Tag.pointwise in getattr(value.target, "tags", ()) and
                len(shape) == rank and not any(isinstance(a, fx.Node) for a in
                                               (*value.args[1:], *value.kwargs.values()))):
            return inner
        if name == "index" and len(value.args[1]) == 1 and isinstance(value.args[1][0], fx.Node):
            return path, [None] * (len(shape) - rank + 1) + dims[1:]   # a lookup along dim 0
        if name == "index_select" and len(shape) == rank:     # w.index_select(d, i): picks along d
            picked = int(value.args[1]) % rank
            return path, [None if i == picked else d for i, d in enumerate(dims)]
        if name in ("view", "reshape", "_unsafe_view"):
            return path, reshaped_dims(dims, self.shape(value.args[0]), shape, value.args[1])
        if name == "squeeze":
            source = self.shape(value.args[0])
            picked = value.args[1] if len(value.args) > 1 else range(rank)
            picked = {int(d) % rank for d in (picked if isinstance(picked, (list, tuple, range))
                                              else [picked])}
            return path, [d for i, d in enumerate(dims) if not (i in picked and source[i] == 1)]
        if name == "expand":    # new leading dims; a dim given a literal size holds it no more
            sizes = list(value.args[1])[len(shape) - rank:]
            return path, [None] * (len(shape) - rank) + [
                d if isinstance(size, int) and size == -1 else None
                for d, size in zip(dims, sizes)]
        moved = permuted_dims(name, value.args, dims)
        if moved is not None:
            return path, moved
        if name == "select" and rank >= 1:
            return path, dims[:int(value.args[1]) % rank] + dims[int(value.args[1]) % rank + 1:]
        if name == "unsqueeze":
            at = int(value.args[1]) % (rank + 1)
            return path, dims[:at] + [None] + dims[at:]
        return None


def permuted_dims(name: str, args: tuple, dims: list) -> list | None:
    """``dims`` (what each dim of ``args[0]`` holds) as a ``t``, ``mT``, ``transpose``,
    ``swapaxes``/``swapdims`` or ``permute`` (op packet ``name``, its ``args``) reorders
    them; None for any other op.

    Example::

        >>> permuted_dims("transpose", (None, 0, 2), ["a", "b", "c"])
        ['c', 'b', 'a']
        >>> permuted_dims("permute", (None, [1, 0]), ["a", "b"]), permuted_dims("relu", (None,), ["a"])
        (['b', 'a'], None)
    """
    rank = len(dims)
    if name in ("t", "numpy_T"):
        return dims[::-1]
    swap = {"mT": (-2, -1), "transpose": tuple(args[1:3]), "swapaxes": tuple(args[1:3]),
            "swapdims": tuple(args[1:3])}.get(name)
    if swap is not None and rank >= 2 and len(swap) == 2:
        a, b = (int(d) % rank for d in swap)
        dims = list(dims)
        dims[a], dims[b] = dims[b], dims[a]
        return dims
    if name == "permute" and len(args) > 1 and len(args[1]) == rank:
        return [dims[int(p) % rank] for p in args[1]]
    return None


def reshaped_dims(dims: list, source: tuple, target: tuple, sizes) -> list:
    """Which source dim each dim of a reshape is, for dims given as ``-1`` that the
    reshape leaves whole (same size, same number of entries before and after it);
    None for the others (a literal size would not follow a slice)."""
    if not all(isinstance(n, int) for n in (*source, *target)) or len(sizes) != len(target):
        return [None] * len(target)
    out = []
    for i, size in enumerate(sizes):
        found = None
        if isinstance(size, int) and size == -1:
            before, after = math.prod(target[:i]), math.prod(target[i + 1:])
            found = next((dims[j] for j in range(len(source))
                          if source[j] == target[i] and math.prod(source[:j]) == before
                          and math.prod(source[j + 1:]) == after), None)
        out.append(found)
    return out
