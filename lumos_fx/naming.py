"""One name per channel group, shared by ``gates()``, ``report()`` and the HTML report.

A group is named after the module that produces its channels, by the dotted
path users know from ``model.named_modules()`` (``layer1.0.conv1``, ``0`` in an
``nn.Sequential``), or after the model input it gates (``input``, ``x``). A
flattened layer's finer gate on single positions is ``<layer>:positions``. Two
groups that would share a name get ``#2``, ``#3``... in group order.

``state_dict`` keys cannot contain dots inside a ``ModuleDict`` key, so each
gate is stored under a *key* with the dots replaced (``lumos_gates.
layer1_0_conv1.log_alpha``); checkpoints keep that layout. :func:`gates_by_name`
maps display names to gates and still accepts a gate's key for lookup, so code
written against the keys keeps working.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(3, 4),))
    >>> sorted(lumos.gates(gated))
    ['0', 'input']
    >>> lumos.gates(gated)["m0"] is lumos.gates(gated)["0"]     # the state_dict key works too
    True
    >>> gate_keys(gated)
    {'input': 'input', '0': 'm0'}
"""
from __future__ import annotations

from torch import nn

from .state import LumosState, state_of, unwrap


def group_names(state: LumosState) -> dict[int, str]:
    """Group index -> unique display name, for every group of the plan."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for group in state.plan.channels.groups():
        name, n = group.name, 1
        while name in used:
            n += 1
            name = f"{group.name}#{n}"
        used.add(name)
        names[group.index] = name
    return names


def gate_keys(gated: nn.Module) -> dict[str, str]:
    """Display name -> ``state_dict`` key (``lumos_gates.<key>.log_alpha``) of every gate."""
    state = state_of(gated)
    names = group_names(state)
    return {names[gid]: key for gid, key in state.keys.items()}


class GateMap(dict):
    """Gates by display name; a gate's ``state_dict`` key is accepted for lookup too."""

    def __init__(self, gates: dict, aliases: dict[str, str]):
        super().__init__(gates)
        self._aliases = aliases

    def __missing__(self, key):
        name = self._aliases.get(key)
        if name is not None:
            return self[name]
        raise KeyError(f"no gated group named {key!r}; groups are named by module path: "
                       f"{sorted(self)}")


def gates_by_name(gated: nn.Module) -> GateMap:
    """The gates of ``gated`` keyed by display name (see :func:`group_names`)."""
    bank = unwrap(gated).lumos_gates
    keys = gate_keys(gated)
    return GateMap({name: bank[key] for name, key in keys.items()},
                   {key: name for name, key in keys.items() if key != name})
