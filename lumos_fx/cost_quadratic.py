"""The expected cost as a quadratic form, for models whose every position has one gate.

When each gated position of a labeled dim is removed by exactly one gate (no
flattened column that needs a channel gate and a position gate) and every
sliced parameter has at most two labeled dims (weights, biases, norms, tables),
a dim's expected kept size is linear in the open probabilities ``q``,
``S = base + M q``, and the expected parameters (FLOPs) are a quadratic form in
``S`` extended by a constant 1: ``E_m = S^T A_m S`` with ``A_m[a, b]`` the sum of
the weights of the terms over dims ``a`` and ``b`` (dims with the same positions
merged, the parameters outside every group in ``A_0[1, 1]``). That is four
recorded tensor ops (``S`` as one matrix-vector product with the 0/1 matrix ``M``,
or a gather and a segment sum when ``M`` would be large, two small matrix
products, an unbind) whose backward the autograd engine runs without a Python step, against about twenty ops and a
Python backward for the general product in :mod:`lumos_fx.cost`: what a
training step with a penalty pays for on a small model.

Example::

    >>> import torch
    >>> from lumos_fx.cost_quadratic import QuadraticCost
    >>> # two dims: 2 positions on slots 0,1 and 3 positions on slots 2,3,4 (+1 ungated);
    >>> # one weight term over both dims, one bias term over the second
    >>> form = QuadraticCost.build(gathers=[[0, 1], [2, 3, 4]], base=[0.0, 1.0],
    ...                            term_dims=[[0, 1], [1]], weights=[(1.0, 10.0), (1.0, 0.0)],
    ...                            constant=3.0)
    >>> params, flops = form(torch.ones(5))
    >>> params.item(), flops.item()    # 2 * 4 + 4 + 3, 10 * 2 * 4
    (15.0, 80.0)
"""
from __future__ import annotations

import torch
from torch import nn

# A dense (D+1) x (D+1) form per metric: above this many distinct dims the general path
# of lumos_fx.cost is cheaper in memory.
MAX_DIMS = 1023
# M (dims x slots) is dense up to this many entries, else S is a gather and a segment sum.
MAX_DENSE = 1 << 20


class QuadraticCost(nn.Module):
    """``(params, FLOPs) = (S^T A_0 S, S^T A_1 S)`` with ``S = base + M q``.

    Build it with :meth:`build` (None when the model's cost is not such a form).
    """

    def __init__(self, base: torch.Tensor, form: torch.Tensor, gather: torch.Tensor,
                 segment: torch.Tensor, slots: int, max_dense: int | None = None):
        super().__init__()
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("form", form, persistent=False)
        self.register_buffer("symmetric", form + form.transpose(1, 2), persistent=False)
        self.dense = base.numel() * slots <= (MAX_DENSE if max_dense is None else max_dense)
        if self.dense:
            matrix = torch.zeros(base.numel(), slots, dtype=base.dtype)
            matrix.index_put_((segment, gather), torch.ones(len(gather), dtype=base.dtype),
                              accumulate=True)
            self.register_buffer("matrix", matrix, persistent=False)
        else:
            self.register_buffer("gather", gather, persistent=False)
            self.register_buffer("segment", segment, persistent=False)

    @classmethod
    def build(cls, gathers, base, term_dims, weights, constant: float = 0.0,
              slots: int | None = None, max_dense: int | None = None) -> "QuadraticCost | None":
        """From the per-dim gathered slots (one slot per gated position), the per-dim
        ungated counts, each term's dims and its (params, FLOPs) weight, the
        parameters no gate touches and the number of slots; None when a term spans more than two dims or there
        are too many distinct dims."""
        if any(len(t) > 2 for t in term_dims):
            return None
        distinct: dict[tuple, int] = {}
        merged = [distinct.setdefault((tuple(sorted(g)), b), len(distinct))
                  for g, b in zip(gathers, base)]
        dims = len(distinct)
        if dims > MAX_DIMS:
            return None
        form = torch.zeros(2, dims + 1, dims + 1, dtype=torch.float64)
        for term, weight in zip(term_dims, weights):
            a, b = ([merged[d] for d in term] + [dims, dims])[:2]
            form[:, a, b] += torch.tensor(weight, dtype=torch.float64)
        form[0, dims, dims] += constant
        keys = list(distinct)
        gather = torch.tensor([s for g, _ in keys for s in g], dtype=torch.long)
        segment = torch.tensor([d for d, (g, _) in enumerate(keys) for _ in g], dtype=torch.long)
        if slots is None:
            slots = 1 + max((s for g in gathers for s in g), default=-1)
        return cls(torch.tensor([b for _, b in keys] + [1.0]), form.float(), gather, segment,
                   slots, max_dense)

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (params, FLOPs), each shaped ``q.shape[:-1]``, in recorded tensor ops
        (their backward runs in the autograd engine, with no Python step)."""
        base, form = _as(self.base, q), _as(self.form, q)
        if q.dim() == 1:
            kept = self._kept(q)
            return torch.mv(torch.matmul(form, kept), kept).unbind()
        rows = q.reshape(-1, q.shape[-1])
        if self.dense:
            kept = torch.addmm(base, rows, _as(self.matrix, q).T)
        else:
            kept = base.expand(rows.shape[0], -1).index_add(1, self.segment,
                                                             rows.index_select(1, self.gather))
        values = (torch.matmul(kept, form) * kept).sum(-1)                  # (2, rows)
        return values[0].reshape(q.shape[:-1]), values[1].reshape(q.shape[:-1])

    def value_and_gradient(self, q: torch.Tensor, metric: int | None = None,
                           scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``[params, FLOPs]`` at a 1-D ``q`` and their gradients with respect to it
        (``M^T (A + A^T) S``, shape ``(2, slots)``), or with ``metric`` (0: params,
        1: FLOPs) that one alone; times ``scale``. What a penalty attaches to the gates
        in closed form; call it under ``torch.no_grad()``."""
        form, symmetric = self._forms(metric, scale, q)
        kept = self._kept(q)
        values = torch.matmul(torch.matmul(form, kept), kept)
        grad_kept = torch.matmul(symmetric, kept)                       # (..., D+1)
        if self.dense:
            return values, torch.matmul(grad_kept, _as(self._buffers["matrix"], q))
        grads = q.new_zeros(*grad_kept.shape[:-1], q.numel())
        return values, grads.index_add_(-1, self._buffers["gather"],
                                        grad_kept.index_select(-1, self._buffers["segment"]))

    def _forms(self, metric: int | None, scale: float, like: torch.Tensor):
        """``(A, A + A^T)`` of ``metric`` (both when None) times ``scale``, in ``like``'s
        dtype; cached, since a penalty asks for the same ones at every step."""
        form = self._buffers["form"]
        key = (metric, scale, like.dtype, form.device)
        cache = self.__dict__.setdefault("_forms_cache", {})
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            pair = (form, self._buffers["symmetric"])
            cache[key] = tuple((t if metric is None else t[metric]).to(like.dtype) * scale
                               for t in pair)
        return cache[key]

    def _kept(self, q: torch.Tensor) -> torch.Tensor:
        """``S = base + M q`` for a 1-D ``q``."""
        buffers = self._buffers
        base = _as(buffers["base"], q)
        if self.dense:
            return torch.addmv(base, _as(buffers["matrix"], q), q)
        return base.index_add(0, buffers["segment"], q.index_select(0, buffers["gather"]))


def _as(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == like.dtype else tensor.to(like.dtype)
