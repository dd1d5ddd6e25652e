"""Expected size of the extracted model as a differentiable function of the gates.

A weight entry survives extraction when every gated channel it touches stays
open, so its expected count is the product, over its labeled dims, of the
expected number of kept positions along that dim (``q_a * q_b`` for an entry
between two gated groups, where ``q = P(z != 0)``). Summed over all sliced
parameters this is the expected parameter count of the extracted model (the
paper's ``L_C``, with each channel's real cost); weights times the output
positions they are applied at give FLOPs.

Example::

    >>> import torch
    >>> from torch import nn
    >>> import lumos_fx as lumos
    >>> gated = lumos.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)),
    ...                       example_inputs=(torch.randn(2, 4),))
    >>> cost = gated.lumos_cost
    >>> int(cost.total_params), round(float(cost.expected(gated)[0]), 1)
    (49, 48.3)
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .passes.build_groups import GroupPlan


class ExpectedCost(nn.Module):
    """Expected parameters and FLOPs of the extracted model.

    Every gated channel has a slot in one concatenated probability vector (plus
    a final slot fixed at 1 for positions no gate can remove); each labeled dim
    of each sliced parameter is an index buffer into it. A position survives
    when all its label arrays survive (a flattened column needs its channel and
    its own position gate), so its probability is the product over them.

    Args:
        plan: the channel groups.
        keys: group index -> gate key of the gated groups.
        root: the traced model (to read parameter sizes).
    """

    def __init__(self, plan: GroupPlan, keys: dict[int, str], root: nn.Module):
        super().__init__()
        self._order = [keys[g] for g in sorted(keys)]
        self._terms = []
        sliced_params, total_flops = 0, 0.0
        param_paths = {name for name, _ in root.named_parameters()}
        for i, spec in enumerate(plan.params.values()):
            tensor = _lookup(root, spec.path)
            is_param = spec.path in param_paths
            fixed_size = math.prod(s for d, s in enumerate(tensor.shape) if d not in spec.dims)
            dims = []
            for d in spec.dims:
                names = []
                for j, labels in enumerate(spec.label_sets(d)):
                    name = f"i{i}_{d}_{j}"
                    self.register_buffer(name, torch.from_numpy(
                        _global_index(labels, plan, keys)), persistent=False)
                    names.append(name)
                dims.append(names)
            self._terms.append((is_param, spec.flops_per_entry, fixed_size, dims))
            sliced_params += tensor.numel() if is_param else 0
            total_flops += spec.flops_per_entry * tensor.numel()
        self.total_params = sum(p.numel() for n, p in root.named_parameters()
                                if not n.startswith("lumos_"))
        self.constant_params = self.total_params - sliced_params
        self.total_flops = total_flops

    def forward(self, probabilities: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (params, FLOPs) given each gate key's ``P(z != 0)``."""
        parts = [probabilities[key] for key in self._order]
        reference = parts[0] if parts else torch.ones(())
        q = torch.cat([*parts, reference.new_ones(1)])
        params = flops = reference.new_zeros(())
        for is_param, flops_per_entry, fixed_size, dims in self._terms:
            entries = reference.new_tensor(float(fixed_size))
            for names in dims:
                kept = q[getattr(self, names[0])]
                for name in names[1:]:
                    kept = kept * q[getattr(self, name)]
                entries = entries * kept.sum()
            if is_param:
                params = params + entries
            flops = flops + flops_per_entry * entries
        return params + self.constant_params, flops

    def expected(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return self({k: g.open_probability() for k, g in gated.lumos_gates.items()})

    def deterministic(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The (params, FLOPs) of the model ``extract`` would return now (before
        the rule that keeps one channel in a layer whose gates all closed)."""
        return self({k: (g.deterministic() > 0).float() for k, g in gated.lumos_gates.items()})


def _global_index(labels: np.ndarray, plan: GroupPlan, keys: dict[int, str]) -> np.ndarray:
    """Each position's slot in the concatenation of all gates (last slot: no gate)."""
    group_of, channel_of = plan.channels.atom_table()
    offsets, total = {}, 0
    for gid in sorted(keys):
        offsets[gid] = total
        total += plan.channels.groups()[gid].size
    start = np.full(len(plan.channels.groups()), -1, dtype=np.int64)
    for gid, offset in offsets.items():
        start[gid] = offset
    atoms = labels >= 0
    safe = np.where(atoms, labels, 0)
    slot = np.where(atoms, start[group_of[safe]], -1)
    return np.where(slot >= 0, slot + channel_of[safe], total)


def _lookup(root: nn.Module, path: str) -> torch.Tensor:
    owner, _, name = path.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)
