"""Trace a model into a ``torch.fx.GraphModule`` with lumos_fx's leaf policy.

``LumosTracer`` keeps ``torch.nn`` layers whole (one ``call_module`` node
each), traces through containers and user modules, and knows PyTorch
Geometric: message-passing layers and aggregations stay whole and the global
pooling functions are recorded as single calls. ``trace`` wraps it and turns
any tracing failure into a ``lumos_fx.errors.TraceError`` that quotes the
user's offending line and names the remedy.

Example::

    >>> import torch
    >>> from lumos_fx.tracer import trace
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    ...         self.head = torch.nn.Linear(8, 1)
    ...     def forward(self, x):
    ...         return self.head(self.body(x))
    >>> gm = trace(Net())
    >>> for node in gm.graph.nodes:
    ...     print(node.op, node.target)
    placeholder x
    call_module body.0
    call_module body.1
    call_module head
    output output
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import sys
import traceback
import warnings
from collections.abc import Iterable

import torch
import torch.fx
from torch import nn

from .errors import InputError, LumosError, TraceError

__all__ = ["LumosTracer", "trace"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_PYG_POOLS = ("global_add_pool", "global_mean_pool", "global_max_pool")


def _pyg():
    """``torch_geometric.nn`` if the user has imported PyG, else ``None``.

    A model can only hold PyG layers once PyG is imported, so it is never
    imported here (importing it rebinds ``torch.index_select``).
    """
    if "torch_geometric" not in sys.modules:
        return None
    try:
        import torch_geometric.nn as pyg_nn
    except Exception:  # a broken optional install must not break tracing
        return None
    return pyg_nn


class LumosTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` whose leaves are the layers lumos_fx has rules for.

    Leaves (kept as one ``call_module`` node): modules from ``torch.nn`` and
    ``torch.ao.nn`` except the containers ``Sequential``, ``ModuleList`` and
    ``ModuleDict``; PyG ``MessagePassing`` and ``Aggregation`` modules; and
    whatever ``leaf_modules`` names (module classes, module instances, or
    qualified names such as ``"encoder.block"``). Everything else is traced
    through. PyG's ``global_add/mean/max_pool`` become ``call_function`` nodes.

    A leaf whose class overrides ``nn.Module.__call__`` (PyG's ``Aggregation``
    does, to validate its index) is called through ``nn.Module.__call__`` while
    tracing so the tracer records it; the class is restored on exit.
    """

    def __init__(self, leaf_modules: Iterable = ()):
        self._pyg = _pyg()
        pools = tuple(getattr(self._pyg, name) for name in _PYG_POOLS) if self._pyg else ()
        super().__init__(autowrap_functions=pools)
        if self._pyg is not None:
            # Also catch calls spelled ``torch_geometric.nn.global_mean_pool(...)``.
            import torch_geometric.nn.pool as pool
            import torch_geometric.nn.pool.glob as glob
            self._autowrap_search += [self._pyg, pool, glob]
        self.leaf_types, self.leaf_ids, self.leaf_names = _split_leaves(leaf_modules)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if (id(m) in self.leaf_ids or module_qualified_name in self.leaf_names
                or isinstance(m, self.leaf_types)):
            return True
        if self._pyg is not None and isinstance(
                m, (self._pyg.MessagePassing, self._pyg.aggr.Aggregation)):
            return True
        if isinstance(m, _CONTAINERS):
            return False
        return type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))

    def trace(self, root, concrete_args=None) -> torch.fx.Graph:
        if not isinstance(root, nn.Module):
            return super().trace(root, concrete_args)
        leaves = {m for name, m in root.named_modules(remove_duplicate=False)
                  if name and self.is_leaf_module(m, name)}
        with _calls_through_module_call(leaves):
            return super().trace(root, concrete_args)


def _split_leaves(leaf_modules):
    types, ids, names = [], set(), set()
    for leaf in leaf_modules:
        if isinstance(leaf, type) and issubclass(leaf, nn.Module):
            types.append(leaf)
        elif isinstance(leaf, nn.Module):
            ids.add(id(leaf))
        elif isinstance(leaf, str):
            names.add(leaf)
        else:
            raise InputError(f"leaf_modules takes nn.Module classes, instances or qualified "
                             f"names; got {leaf!r} of type {type(leaf).__name__}")
    return tuple(types), ids, names


@contextlib.contextmanager
def _calls_through_module_call(leaves):
    """Route leaves whose class overrides ``__call__`` through ``nn.Module.__call__``."""
    classes = {cls for m in leaves for cls in type(m).__mro__[:type(m).__mro__.index(nn.Module)]
               if "__call__" in cls.__dict__}
    leaf_ids = {id(m) for m in leaves}
    saved = [(cls, cls.__dict__["__call__"]) for cls in classes]

    def routed(original):
        def __call__(mod, *args, **kwargs):
            if id(mod) in leaf_ids:  # nn.Module.__call__ is the tracer's patch now
                return nn.Module.__call__(mod, *args, **kwargs)
            return original(mod, *args, **kwargs)
        return __call__

    try:
        for cls, original in saved:
            cls.__call__ = routed(original)
        yield
    finally:
        for cls, original in saved:
            cls.__call__ = original


def trace(model: nn.Module, *, leaf_modules: Iterable = (),
          concrete_args: dict | None = None) -> torch.fx.GraphModule:
    """Trace ``model`` with :class:`LumosTracer`; the model itself is not modified.

    Args:
        model: the module to trace.
        leaf_modules: extra module classes, instances or qualified names to keep whole.
        concrete_args: values for arguments that steer Python control flow.

    Raises:
        TraceError: the model cannot be traced; the message quotes the line.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"trace expects an nn.Module, got {type(model).__name__}")
    tracer = LumosTracer(leaf_modules)
    names = {name for name, _ in model.named_modules()}
    ids = {id(m) for m in model.modules()}
    if tracer.leaf_ids - ids or tracer.leaf_names - names:
        warnings.warn("leaf_modules names a module that is not part of the model "
                      "(a module of a copy?); it has no effect", stacklevel=2)
    try:
        graph = tracer.trace(model, concrete_args)
    except LumosError:
        raise
    except Exception as err:
        raise TraceError(_explain(model, err, concrete_args or {})) from err
    return torch.fx.GraphModule(model, graph, class_name=type(model).__name__)


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_LUMOS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _explain(model: nn.Module, err: Exception, concrete_args: dict) -> str:
    """The message of the ``TraceError`` raised for ``err``.

    Quotes the last traceback frame outside torch, lumos_fx and PyG (the user's
    line) and, when the failure happened deeper in a library, that line too.
    """
    summary = traceback.extract_tb(err.__traceback__)
    dirs = [_TORCH_DIR, _LUMOS_DIR]
    outside = [i for i, fs in enumerate(summary)
               if not os.path.abspath(fs.filename).startswith(tuple(dirs))]
    pyg = sys.modules.get("torch_geometric")
    if pyg is not None and getattr(pyg, "__file__", None):
        dirs.append(os.path.dirname(pyg.__file__) + os.sep)
    user = [i for i in outside
            if not os.path.abspath(summary[i].filename).startswith(tuple(dirs))]
    what, fixes = _diagnosis(err)
    lines = [f"lumos_fx could not trace {type(model).__name__}: {what}"]
    owner = None  # the innermost submodule (not the root) whose code was running
    if outside:
        paths = {id(m): name for name, m in model.named_modules()}
        frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
        for frame in frames[:outside[-1] + 1]:
            mod = frame.f_locals.get("self")
            if isinstance(mod, nn.Module) and id(mod) in paths:
                owner = mod if paths[id(mod)] else None
        where = f" (in submodule '{paths[id(owner)]}', a {type(owner).__name__})" if owner else ""
        for k, i in enumerate(dict.fromkeys(user[-1:] + outside[-1:])):
            fs = summary[i]
            lines += [f'  {"via" if k else "File"} "{fs.filename}", line {fs.lineno}, in {fs.name}'
                      + ("" if k else where),
                      "    " + linecache.getline(fs.filename, fs.lineno).strip()]
    leaf = type(owner).__name__ if owner is not None else "ThatClass"
    lines += ["Remedies:",
              *(f"  - {fix}" for fix in fixes),
              f"  - keep the submodule holding this code whole: leaf_modules=[{leaf}]"
              + ("" if owner is not None else " (move the code into a submodule first)"),
              f"  - pass concrete_args={_concrete_hint(model, concrete_args)}",
              "  - move the code into a helper function decorated with @torch.fx.wrap, "
              "so it is recorded as one call",
              f"Original error: {type(err).__name__}: {err}"]
    return "\n".join(lines)


def _concrete_hint(model: nn.Module, concrete_args: dict) -> str:
    """Suggest fixing the forward arguments that default to None: unless given
    in ``concrete_args`` they are traced as tensors, so ``is None`` is False."""
    params = inspect.signature(type(model).forward).parameters.values()
    unset = [p.name for p in params if p.default is None and p.name not in concrete_args]
    if not unset:
        return "{'arg': value} to fix an argument that steers control flow"
    given = ", ".join(f"{name!r}: None" for name in unset)
    return ("{" + given + "} for the arguments you never pass (each is traced as a "
            "tensor otherwise), or {'arg': value} to fix one that steers control flow")


# (words in torch's message, what went wrong, the fix for that case); first match wins
_KNOWN = [
    (("cannot be iterated",), "a traced value cannot be iterated over or unpacked with *.",
     "loop over range() of a Python int, or use tensor ops (x.unbind(), x.view(x.shape))"),
    (("control flow",), "control flow (if/while/bool) cannot depend on tensor values.",
     "compute both branches and select with torch.where(cond, a, b)"),
    (("'len' is not supported",), "len() of a traced tensor is not a Python int.",
     "use x.size(0) or x.shape[0] instead of len(x)"),
    (("cannot be interpreted as an integer", "not 'Proxy'"),
     "a traced value cannot become a Python number (int(), float(), range()).",
     "keep sizes symbolic: pass x.size(0) straight to tensor methods such as x.new_zeros"),
    (("positional argument", "invalid combination of arguments"),
     "a tensor constructor got sizes computed from a traced tensor as separate arguments.",
     "pass the sizes as one tuple, torch.ones((n, m)), or use x.new_ones(n, m)"),
]


def _diagnosis(err: Exception) -> tuple[str, list[str]]:
    """What went wrong, in words, and the fixes specific to it."""
    text = str(err)
    for words, what, fix in _KNOWN:
        if any(word in text for word in words):
            return what, [fix]
    return "this code is not symbolically traceable.", []
