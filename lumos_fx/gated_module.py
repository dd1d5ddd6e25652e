"""The gated model: two captured graphs (train, eval) over one set of state.

``GatedModule`` runs its train graph in ``.train()`` mode and its eval graph in
``.eval()`` mode. Both graphs read the same parameters, buffers and gates: the
module and both ``GraphModule``s share one ``_parameters``/``_buffers``/
``_modules`` dict, so ``.to()``, ``.double()``, ``load_state_dict`` and
optimizers see one model. It survives ``copy.deepcopy``, ``torch.save``/
``torch.load`` (graphs travel with their ``node.meta``, see
:mod:`lumos_fx.graph_pickle`), ``torch.compile`` and DDP. What ``compile`` knows
about the groups lives in ``lumos_state``.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> gated = lumos.compile(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout()),
    ...                       example_inputs=(torch.randn(3, 4),))
    >>> type(gated).__name__, sorted(gated.state_dict())[:2]
    ('GatedModule', ['0.bias', '0.weight'])
    >>> [n.args[2] for n in gated.graph_for(True).nodes if n.name == "dropout"]
    [True]
"""
from __future__ import annotations

import copy

from torch import fx, nn

from .capture import KEPT_META, BufferTracer
from .graph_pickle import graph_from_rows, graph_to_rows

_STATE = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


class GatedModule(nn.Module):
    """Dispatches ``forward`` to the train or eval graph by ``self.training``."""

    #: the Hugging Face ``Trainer`` reads this: the gated model takes the captured model's
    #: arguments only, never the Trainer's ``num_items_in_batch``
    accepts_loss_kwargs = False

    def __init__(self, graphs: dict[bool, fx.GraphModule], state, name: str = "model",
                 signature=None):
        super().__init__()
        self.__dict__["_graphs"] = dict(graphs)
        for key in _STATE:
            self.__dict__[key] = graphs[True].__dict__[key]
        self.__dict__["lumos_state"] = state
        self.__dict__["model_name"] = name
        self.__dict__["call_signature"] = signature
        self._tie()

    def _tie(self) -> None:
        """Point both graph modules at this module's state dicts (not tensors:
        ``.to()`` and ``.double()`` may replace the tensor objects)."""
        for gm in self._graphs.values():
            for key in _STATE:
                gm.__dict__[key] = self.__dict__[key]

    def graph_module(self, training: bool) -> fx.GraphModule:
        return self._graphs[bool(training)]

    def graph_for(self, training: bool) -> fx.Graph:
        return self._graphs[bool(training)].graph

    @property
    def graph(self) -> fx.Graph:
        """The eval-mode graph (what ``extract`` rewrites)."""
        return self._graphs[False].graph

    @property
    def code(self) -> str:
        """The eval-mode graph's Python code."""
        return self._graphs[False].code

    def forward(self, *args, **kwargs):
        if self.call_signature is not None:
            args, kwargs = self.call_signature.bind(args, kwargs)
        guard = self.__dict__.get("input_shapes")     # (absent in checkpoints before it)
        graph_module = self._graphs[self.training]
        if guard is not None:
            guard.check_call(graph_module, args, kwargs)
        return graph_module(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_graphs"] = {mode: (graph_to_rows(gm.graph, KEPT_META), gm.__class__.__name__)
                            for mode, gm in self._graphs.items()}
        return state

    def __setstate__(self, state):
        graphs = state.pop("_graphs")
        self.__dict__.update(state)
        self.__dict__["_graphs"] = {}
        for mode, (rows, class_name) in graphs.items():
            gm = fx.GraphModule(self, graph_from_rows(rows), class_name=class_name)
            gm._tracer_cls = BufferTracer
            self._graphs[mode] = gm
        self._tie()

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        state = self.__getstate__()
        for rows, _ in state["_graphs"].values():   # code generators are immutable: share
            memo[id(rows["codegen"])] = rows["codegen"]
        new.__setstate__(copy.deepcopy(state, memo))
        return new

    def extra_repr(self) -> str:
        return f"model={self.model_name}"
