"""Channel spaces, atoms and groups (DESIGN.md §4).

Every channel that could be removed is an *atom*: an integer id. A tensor
dimension that carries prunable channels is described by a *label array*: one
atom id per position along that dimension, ``-1`` for a position that can
never be removed. Producers (a Linear's output rows, a model input's feature
dim) create fresh atoms; structure ops map label arrays (``cat`` concatenates
them, ``flatten`` repeats each channel over its spatial block, ``permute``
moves them to another dim); elementwise ops *unify* atoms position by
position. Atoms that end up unified are one channel: they live or die
together. A *space* is the atoms one producer created; spaces that share a
channel form a *group*, which gets one gate vector with one entry per
channel.

Example::

    >>> from lumos_fx.channels import ChannelGraph
    >>> g = ChannelGraph()
    >>> a = g.new_space("fc1", 3)
    >>> b = g.new_space("fc2", 3)
    >>> g.unify(a, b)            # residual add: fc1 + fc2
    >>> g.pin(g.new_space("head", 2), "model output")
    >>> [(grp.name, grp.size, grp.pinned) for grp in g.groups()]
    [('fc1', 3, None), ('head', 2, 'model output')]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

Labels = np.ndarray  # int64, one atom id per position, -1 = never removed


@dataclass
class Space:
    """Atoms created together by one producer (or one model input)."""

    name: str
    kind: str
    start: int
    size: int


@dataclass
class Group:
    """Channels that share one gate vector.

    ``channel_of_atom`` maps every atom of the group to its channel index in
    ``range(size)``. ``pinned`` is the reason the group may not shrink, or None;
    ``kept`` the channels that survive whatever their gate (a ``select`` reads them).
    """

    index: int
    name: str
    spaces: list[Space]
    channel_of_atom: dict[int, int]
    pinned: str | None
    kept: frozenset = frozenset()
    size: int = field(init=False)

    def __post_init__(self):
        self.size = len(set(self.channel_of_atom.values()))


class ChannelGraph:
    """Union-find over channel atoms plus the pins recorded against them."""

    def __init__(self):
        self._parent: list[int] = []
        self._space_of_atom: list[int] = []
        self.spaces: list[Space] = []
        self._pins: dict[int, str] = {}
        self._kept: set[int] = set()       # atoms an op reads one by one (see keep)
        self._groups: list[Group] | None = None
        self._owner: dict[int, Group] | None = None
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    # -- building -----------------------------------------------------------
    def new_space(self, name: str, size: int, kind: str = "producer") -> Labels:
        """Create ``size`` fresh atoms owned by a new space; return their labels."""
        start = len(self._parent)
        self._parent.extend(range(start, start + size))
        self._space_of_atom.extend([len(self.spaces)] * size)
        self.spaces.append(Space(name, kind, start, size))
        self._groups = None
        return np.arange(start, start + size, dtype=np.int64)

    def space_of(self, atom: int) -> Space:
        """The space that created ``atom``."""
        return self.spaces[self._space_of_atom[atom]]

    def find(self, atom: int) -> int:
        parent = self._parent
        root = atom
        while parent[root] != root:
            root = parent[root]
        while parent[atom] != root:
            parent[atom], atom = root, parent[atom]
        return root

    def unify(self, a: Labels, b: Labels, reason: str = "unified with a fixed channel") -> None:
        """Make the channels at equal positions of ``a`` and ``b`` one channel.

        A position that is ``-1`` on one side pins the atom on the other side.
        """
        if len(a) != len(b):
            raise ValueError(f"cannot unify label arrays of lengths {len(a)} and {len(b)}")
        self._groups = None
        fixed = (a < 0) | (b < 0)
        if fixed.any():
            self.pin(np.where(fixed, np.maximum(a, b), -1), reason)
        both = ~fixed & (a != b)
        for x, y in zip(a[both].tolist(), b[both].tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def keep(self, labels: Labels) -> None:
        """The channels in ``labels`` survive extraction whatever their gates say (their
        group stays prunable otherwise): an op reads them one by one, ungated."""
        self._groups = None
        self._kept.update(np.unique(labels[labels >= 0]).tolist())

    def pin(self, labels: Labels, reason: str) -> None:
        """Forbid removing any channel in ``labels`` (first reason wins)."""
        self._groups = None
        for atom in np.unique(labels[labels >= 0]).tolist():
            self._pins.setdefault(atom, reason)

    # -- results ------------------------------------------------------------
    def groups(self) -> list[Group]:
        """Connected spaces as groups, in order of their first space."""
        if self._groups is None:
            self._groups = self._build_groups()
            self._owner = self._table = None
        return self._groups

    def _build_groups(self) -> list[Group]:
        links = nx.Graph()
        links.add_nodes_from(range(len(self.spaces)))
        roots = [self.find(a) for a in range(len(self._parent))]
        for atom, root in enumerate(roots):
            links.add_edge(self._space_of_atom[atom], self._space_of_atom[root])
        groups, kept_atoms = [], getattr(self, "_kept", ())   # (a graph pickled before keep)
        for members in sorted(nx.connected_components(links), key=min):
            spaces = [self.spaces[i] for i in sorted(members)]
            channel_of_root: dict[int, int] = {}
            channel_of_atom: dict[int, int] = {}
            pinned, kept = None, set()
            for space in spaces:
                for atom in range(space.start, space.start + space.size):
                    root = roots[atom]
                    channel_of_atom[atom] = channel_of_root.setdefault(root, len(channel_of_root))
                    pinned = pinned or self._pins.get(atom)
                    if atom in kept_atoms:
                        kept.add(channel_of_atom[atom])
            # named after a layer or input, not a tensor the model allocated
            name = next((s.name for s in spaces if s.kind not in ("factory", "broadcast")),
                        spaces[0].name)
            groups.append(Group(len(groups), name, spaces, channel_of_atom, pinned,
                                frozenset(kept)))
        return groups

    def group_of_atom(self) -> dict[int, Group]:
        if self._owner is None:
            self._owner = {atom: g for g in self.groups() for atom in g.channel_of_atom}
        return self._owner

    def kept_atoms(self) -> np.ndarray:
        """Whether each atom's channel is kept whatever its gate (bool, by atom id)."""
        marked = np.fromiter(getattr(self, "_kept", ()), dtype=np.int64)
        if not len(marked):
            return np.zeros(len(self._parent), dtype=bool)
        group, channel = self.atom_table()
        code = group * (int(channel.max()) + 1) + channel       # one number per channel
        return np.isin(code, code[marked])

    def atom_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(group index, channel index)`` of every atom, as arrays indexed by atom id."""
        if self._table is None:
            group = np.empty(len(self._parent), dtype=np.int64)
            channel = np.empty(len(self._parent), dtype=np.int64)
            for g in self.groups():
                atoms = np.fromiter(g.channel_of_atom.keys(), dtype=np.int64)
                group[atoms] = g.index
                channel[atoms] = np.fromiter(g.channel_of_atom.values(), dtype=np.int64)
            self._table = group, channel
        return self._table
