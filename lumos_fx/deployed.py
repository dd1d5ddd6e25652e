"""Load a deployed AOTInductor package and call it with little Python in the way.

``torch._inductor.aoti_load_package`` returns a callable that parses the package's
input and output tree specs from strings on *every* call; at batch 1 that costs
more than the compiled model itself (about 15 us of a 20 us call for a small MLP
on one CPU thread). :class:`DeployedModel` parses them once, flattens the inputs
with the stored spec, and hands the tensors to the compiled runner; what it
returns is exactly what the package's own callable returns.

Example::

    >>> import tempfile, torch
    >>> import lumos_fx as lumos
    >>> from lumos_fx.deployed import DeployedModel
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(16, 4),))
    >>> result = lumos.deploy(gated, path=tempfile.mkdtemp(), aot=True, measure=False)  # doctest: +SKIP
    >>> DeployedModel(result.package)(torch.randn(3, 4)).shape                       # doctest: +SKIP
    torch.Size([3, 2])
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from .errors import InputError

__all__ = ["DeployedModel"]


class DeployedModel:
    """An AOTInductor package (``model_aoti.pt2``) loaded for calling.

    Args:
        package: path of the ``.pt2`` package ``lumos.deploy(..., aot=True)`` wrote.

    Calling it takes the model's positional (and keyword) inputs, like the model.
    """

    def __init__(self, package: str | os.PathLike):
        if not Path(package).is_file():
            raise InputError(f"no AOTInductor package at {str(package)!r}; write one with "
                             "lumos.deploy(model, path=..., aot=True)")
        self.package = Path(package)
        self.compiled = torch._inductor.aoti_load_package(str(package))
        in_spec, out_spec = self.compiled.loader.get_call_spec()
        self._in_spec = pytree.treespec_loads(in_spec)
        self._out_spec = pytree.treespec_loads(out_spec)
        self._run = self.compiled.loader.boxed_run
        # the common case, (tensor, ..., tensor) positional inputs only: no flattening
        args_spec = self._in_spec.child(0) if self._in_spec.num_children == 2 else None
        self._positional = (
            args_spec is not None and self._in_spec.child(1).num_leaves == 0
            and all(child.is_leaf() for child in args_spec.children()))
        self._arity = args_spec.num_children if args_spec is not None else -1

    def __call__(self, *args, **kwargs):
        if self._positional and not kwargs and len(args) == self._arity and all(
                type(a) is torch.Tensor for a in args):
            flat = list(args)
        else:
            from torch.export._tree_utils import reorder_kwargs
            flat = [x for x in pytree.tree_flatten((args, reorder_kwargs(kwargs, self._in_spec)))[0]
                    if isinstance(x, torch.Tensor)]
        return pytree.tree_unflatten(self._run(flat), self._out_spec)

    def __repr__(self) -> str:
        return f"DeployedModel({str(self.package)!r})"
