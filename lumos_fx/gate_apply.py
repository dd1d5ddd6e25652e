"""The op that multiplies a tensor by gate values along one dim.

One :class:`GateApply` sits in front of each consumer input. It gathers the
values of the gates of every group present along that dim (a ``cat`` of two
branches reads two groups) into one multiplier, using a fixed index buffer;
positions that belong to no gated group get 1.

Example::

    >>> import torch
    >>> from lumos_fx.gate_apply import GateApply
    >>> apply = GateApply(dim=1, rank=2, index=torch.tensor([0, 2, 1, 4]))   # 4: no gate
    >>> apply(torch.ones(1, 4), torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.25])).tolist()
    [[0.5, 1.0, 0.0, 1.0]]
"""
from __future__ import annotations

import torch
from torch import nn



def gate_multiplier(gates: tuple[torch.Tensor, ...], index: torch.Tensor | None) -> torch.Tensor:
    """The per-position gate values: the one gate itself, or ``cat(gates, [1])[index]``."""
    if index is None:
        return gates[0]
    one = torch.ones(1, dtype=gates[0].dtype, device=gates[0].device)
    return torch.cat([*gates, one])[index]


class GateApply(nn.Module):
    """``x * cat(z_1, ..., z_k, [1])[index]`` broadcast along ``dim``.

    Args:
        dim: the dim of ``x`` the gates act on.
        rank: ``x.dim()``.
        index: for every position along ``dim``, its entry in the concatenated
            gate vectors; the last entry (one past them) means "no gate".
    """

    def __init__(self, dim: int, rank: int, index: torch.Tensor):
        super().__init__()
        self.dim = dim
        self.rank = rank
        self.register_buffer("index", index.long())
        # the common case, one group read in its own order: no gather needed
        self.identity = bool(torch.equal(self.index, torch.arange(len(self.index))))
        self.shape = [1] * rank
        self.shape[dim] = -1

    def multiplier(self, *gates: torch.Tensor) -> torch.Tensor:
        direct = self.identity and len(gates) == 1 and gates[0].numel() == self.index.numel()
        return gate_multiplier(gates, None if direct else self.index)

    def forward(self, x: torch.Tensor, *gates: torch.Tensor) -> torch.Tensor:
        # (the common case inline: this runs for every gated input at every step)
        multiplier = gates[0]
        if not (self.identity and len(gates) == 1
                and multiplier.numel() == self._buffers["index"].numel()):
            multiplier = gate_multiplier(gates, self._buffers["index"])
        if multiplier.dtype != x.dtype:
            multiplier = multiplier.to(x.dtype)
        if self.dim == self.rank - 1:           # broadcasting along the last dim: no view
            return x * multiplier
        return x * multiplier.view(self.shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, positions={self.index.numel()}"
