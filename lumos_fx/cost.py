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
from .passes.insert_gates import consumer_index


class ExpectedCost(nn.Module):
    """Expected parameters and FLOPs of the extracted model.

    Args:
        plan: the channel groups.
        keys: group index -> gate key of the gated groups.
        root: the traced model (to read parameter sizes).
    """

    def __init__(self, plan: GroupPlan, keys: dict[int, str], root: nn.Module):
        super().__init__()
        self._terms = []
        sliced_params = 0
        total_flops = 0.0
        param_paths = {name for name, _ in root.named_parameters()}
        for i, spec in enumerate(plan.params.values()):
            tensor = _lookup(root, spec.path)
            is_param = spec.path in param_paths
            fixed_size = math.prod(s for d, s in enumerate(tensor.shape) if d not in spec.dims)
            dims = []
            for d, labels in spec.dims.items():
                present, index = consumer_index(labels, plan, keys)
                counts = []
                offset = 0
                total = sum(plan.channels.groups()[g].size for g in present)
                fixed = float((index == total).sum())
                for g in present:
                    size = plan.channels.groups()[g].size
                    mine = index[(index >= offset) & (index < offset + size)] - offset
                    buf = f"c{i}_{d}_{g}"
                    self.register_buffer(buf, torch.from_numpy(
                        np.bincount(mine, minlength=size).astype(np.float32)), persistent=False)
                    counts.append((keys[g], buf))
                    offset += size
                dims.append((fixed, counts))
            self._terms.append((is_param, spec.flops_per_entry, fixed_size, dims))
            sliced_params += tensor.numel() if is_param else 0
            total_flops += spec.flops_per_entry * tensor.numel()
        self.total_params = sum(p.numel() for n, p in root.named_parameters()
                                if not n.startswith("lumos_"))
        self.constant_params = self.total_params - sliced_params
        self.total_flops = total_flops

    def forward(self, probabilities: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (params, FLOPs) given each gate key's ``P(z != 0)``."""
        params = flops = 0.0
        for is_param, flops_per_entry, fixed_size, dims in self._terms:
            entries = fixed_size
            for fixed, counts in dims:
                kept = fixed
                for key, buf in counts:
                    kept = kept + (getattr(self, buf) * probabilities[key]).sum()
                entries = entries * kept
            if is_param:
                params = params + entries
            flops = flops + flops_per_entry * entries
        return torch.as_tensor(params) + self.constant_params, torch.as_tensor(flops)

    def expected(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return self({k: g.open_probability() for k, g in gated.lumos_gates.items()})

    def deterministic(self, gated: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact (params, FLOPs) of the model ``extract`` would return now."""
        return self({k: (g.deterministic() > 0).float() for k, g in gated.lumos_gates.items()})


def _lookup(root: nn.Module, path: str) -> torch.Tensor:
    owner, _, name = path.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)
