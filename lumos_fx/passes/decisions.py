"""Which channels survive extraction, and the gate value each one carries.

:class:`Decisions` reads every gate at its deterministic value once and answers,
for any array of channel labels (``node.meta["lumos"]["labels"]``), which
positions are kept and what gate value each position folds into its consumer.
It also applies the extraction options that keep closed channels (gate value
0, so still exact): no layer with zero width, ``fill_budget`` and ``round_to``.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> from lumos_fx.passes.decisions import Decisions
    >>> from lumos_fx.state import state_of
    >>> gated = lumos.compile(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
    ...                                           torch.nn.Linear(4, 1)),
    ...                       example_inputs=(torch.randn(2, 3),))
    >>> hidden = next(g for g in lumos.gates(gated).values() if g.size == 4)
    >>> with torch.no_grad():
    ...     hidden.log_alpha[1] = -6.0
    >>> state = state_of(gated)
    >>> labels = next(labels for _, labels in state.plan.inputs.values())
    >>> decisions = Decisions(gated, state)
    >>> decisions.kept(labels).tolist(), decisions.values(labels).tolist()
    ([0, 1, 2], [1.0, 1.0, 1.0])
    >>> sorted(int(keep.sum()) for keep in decisions.keep.values())
    [3, 3]
"""
from __future__ import annotations

import numpy as np
import torch
from torch import fx

from ..state import LumosState


FILL_ROUNDS = 20        # first-fit rounds of extract(fill_budget=True)


class Decisions:
    """Per-channel keep/gate-value decisions of every group, by atom.

    All gated channels live in flat arrays (value, keep, score; one slot per gated
    channel plus a last "no gate" slot), so a lookup costs O(len(labels)).
    ``keep``/``value`` give each gated group's part of them by group index (views).
    """

    def __init__(self, gated: fx.GraphModule, state: LumosState, round_to: int = 1,
                 fill_to: tuple[str, float] | None = None):
        self.group_of, self.channel_of = state.plan.channels.atom_table()
        gates = {gid: gated.lumos_gates[key] for gid, key in state.keys.items()}
        values = [g.deterministic().detach().cpu().double().numpy() for g in gates.values()]
        sizes = [len(v) for v in values]
        self._offset = np.full(int(self.group_of.max(initial=-1)) + 1, -1, dtype=np.int64)
        self._offset[list(gates)] = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self._ungated = sum(sizes)       # the slot of "no gate": value 1, kept
        self._flat_value = np.concatenate([*values, np.ones(1)])
        self._flat_keep = self._flat_value > 0
        groups = state.plan.channels.groups()
        for gid in state.keys:          # channels an op reads one by one, ungated
            for channel in groups[gid].kept:
                self._flat_keep[self._offset[gid] + channel] = True
        self._flat_capacity = np.zeros_like(self._flat_keep)    # kept back by fill_budget
        self._flat_score = np.concatenate(
            [*(g.log_alpha.detach().cpu().double().numpy() for g in gates.values()), np.zeros(1)])
        self.value = self._per_group(self._flat_value, state)
        self.keep = self._per_group(self._flat_keep, state)
        # a categorical feature may close entirely: its tables go, nothing has zero width
        self._may_close = np.zeros_like(self._flat_keep)
        for gid in state.keys:
            if any(space.kind == "categorical" for space in state.plan.channels.groups()[gid].spaces):
                self._per_group(self._may_close, state)[gid][:] = True
        for labels in [u.labels for u in state.plan.consumers] + [
                lab for spec in state.plan.params.values() for d in spec.dims
                for lab in spec.label_sets(d)]:
            self._keep_one(labels)
        self.filling = fill_to is not None
        if self.filling:
            self._fill(gated, state, *fill_to)
        if round_to > 1:
            self._round_up(state, round_to)

    def _per_group(self, flat: np.ndarray, state: LumosState) -> dict[int, np.ndarray]:
        """Each gated group's slice of a flat array (views: writes go through)."""
        groups = state.plan.channels.groups()
        return {gid: flat[self._offset[gid]:self._offset[gid] + groups[gid].size]
                for gid in state.keys}

    def _slots(self, labels: np.ndarray) -> np.ndarray:
        """Index into the flat gate arrays of every position (the ungated slot if none)."""
        labels = np.asarray(labels, dtype=np.int64)
        safe = np.where(labels >= 0, labels, 0)
        base = self._offset[self.group_of[safe]] if len(self._offset) else np.full(len(labels), -1)
        gated = (labels >= 0) & (base >= 0)
        return np.where(gated, base + self.channel_of[safe], self._ungated)

    def _keep_one(self, labels: np.ndarray) -> None:
        """No layer may end up with zero width: keep the strongest closed channel
        (its gate value 0 stays folded into the consumers, so this is exact)."""
        slots = self._slots(labels)
        if len(slots) and not self._flat_keep[slots].any() and not self._may_close[slots].all():
            self._flat_keep[slots[np.argmax(self._flat_score[slots])]] = True

    def _reopenable(self, state: LumosState) -> np.ndarray:
        """Flat slots of closed channels and flattened positions (never input features)."""
        groups = state.plan.channels.groups()
        slots = [self._offset[gid] + np.flatnonzero(~keep) for gid, keep in self.keep.items()
                 if all(space.kind not in ("input", "categorical") for space in groups[gid].spaces)]
        return np.concatenate(slots) if slots else np.zeros(0, dtype=np.int64)

    def _fill(self, gated, state: LumosState, metric: str, target: float) -> None:
        """Keep the strongest closed channels (gate value 0: still exact) while the
        extracted model stays within ``target`` (a fraction of ``metric``): a run that
        overshot its budget gets back the capacity it may use, e.g. in a fine-tune.

        Rounds of first-fit in score order: each round measures every closed channel's
        marginal cost at the current widths (the gradient of the exact cost, which is
        linear in each channel), takes the strongest ones whose summed cost fits the
        room left, and keeps the longest prefix of them that the exact cost confirms.
        A channel too expensive for the room (one feeding a wide flattened layer) is
        skipped instead of ending the fill, so cheaper ones after it still get in."""
        cost = gated.lumos_cost
        which, total = (0, cost.total_params) if metric == "params" else (1, cost.total_flops)
        candidates = self._reopenable(state)
        candidates = candidates[np.argsort(-self._flat_score[candidates], kind="stable")]

        def measure(extra: np.ndarray, marginal: bool = False):
            keep = self._flat_keep.astype(np.float64)
            keep[extra] = 1.0
            like = cost.weights
            q = {state.keys[gid]: torch.from_numpy(part).to(like.device, like.dtype)
                 .requires_grad_(marginal) for gid, part in self._per_group(keep, state).items()}
            with torch.set_grad_enabled(marginal):
                fraction = cost.evaluate(cost.slots(q))[which] / total
            if not marginal:
                return float(fraction)
            fraction.backward()
            fraction = fraction.detach()
            grad = np.zeros_like(keep)
            for gid, part in self._per_group(grad, state).items():
                part[:] = q[state.keys[gid]].grad.double().cpu().numpy()
            return float(fraction), grad

        for _ in range(FILL_ROUNDS):
            pending = candidates[~self._flat_keep[candidates]]
            if not len(pending):
                return
            now, marginal = measure(pending[:0], marginal=True)
            room = target - now
            if room <= 0:
                return
            fits = pending[marginal[pending] <= room]
            batch = fits[np.cumsum(marginal[fits]) <= room] if len(fits) else fits
            low, high = 0, len(batch)       # the longest prefix the exact cost confirms
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if measure(batch[:mid]) <= target else (low, mid - 1)
            if low == 0:
                return
            self._flat_keep[batch[:low]] = True
            self._flat_capacity[batch[:low]] = True

    def _round_up(self, state: LumosState, multiple: int) -> None:
        """Keep the strongest closed channels until every channel group's width is a
        multiple of ``multiple`` (or whole): hardware-friendly sizes, still exact
        because their gate value 0 stays folded into the consumers."""
        groups = state.plan.channels.groups()
        for gid, keep in self.keep.items():
            if any(space.kind != "producer" for space in groups[gid].spaces):
                continue        # input features and flattened positions keep their count
            target = min(len(keep), -(-int(keep.sum()) // multiple) * multiple)
            closed = self._offset[gid] + np.flatnonzero(~keep)
            extra = closed[np.argsort(-self._flat_score[closed], kind="stable")]
            self._flat_keep[extra[:target - int(keep.sum())]] = True

    def capacity(self, labels: np.ndarray) -> np.ndarray:
        """Which positions of ``labels`` ``fill_budget`` kept back (closed, gate value 0)."""
        return self._flat_capacity[self._slots(labels)]

    def kept(self, labels: np.ndarray) -> np.ndarray:
        """Indices of the positions of ``labels`` that survive."""
        return np.flatnonzero(self._flat_keep[self._slots(labels)])

    def kept_all(self, label_sets: list[np.ndarray]) -> np.ndarray:
        """Positions that survive in every label array (channel and position gates)."""
        kept = self.kept(label_sets[0])
        for labels in label_sets[1:]:
            kept = np.intersect1d(kept, self.kept(labels))
        return kept

    def values(self, labels: np.ndarray) -> np.ndarray:
        """Gate value at every position of ``labels`` (1 where ungated)."""
        return self._flat_value[self._slots(labels)]
