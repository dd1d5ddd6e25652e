"""Graph data sets that the benchmark loops index like a tensor of samples.

The training, evaluation and timing code (``train.py``, ``measure.py``, ``runner.py``) was
written for tensors: ``x[idx]`` picks samples, ``len(x)`` counts them, ``x.to(device,
torch.float32)`` makes a batch, and ``model(*as_args(batch))`` runs it. A :class:`GraphSet`
answers the same calls for a list of graphs: indexing gives a smaller ``GraphSet`` and
``.to(...)`` collates the graphs with PyG's ``Batch`` into a :class:`GraphInputs` tuple
``(x, edge_index, edge_attr, batch)``, the arguments a graph-level PyG model takes.

Example::

    >>> import torch
    >>> from torch_geometric.data import Data
    >>> g = Data(x=torch.zeros(3, dtype=torch.long), edge_index=torch.tensor([[0, 1], [1, 2]]),
    ...          edge_attr=torch.rand(2, 7))
    >>> graphs = GraphSet([g, g, g])
    >>> x, edge_index, edge_attr, batch = graphs[torch.tensor([0, 2])].to("cpu", torch.float32)
    >>> len(graphs), x.shape, edge_index.tolist(), batch.tolist(), x.dtype
    (3, torch.Size([6]), [[0, 1, 3, 4], [1, 2, 4, 5]], [0, 0, 0, 1, 1, 1], torch.int64)
"""
from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch, Data

FIELDS = ("x", "edge_index", "edge_attr", "batch")


class GraphInputs(tuple):
    """One collated batch of graphs: the model's positional arguments."""

    def to(self, device=None, dtype=None) -> "GraphInputs":
        return GraphInputs(_move(t, device, dtype) for t in self)


def _move(t: torch.Tensor, device, dtype) -> torch.Tensor:
    if dtype is not None and t.is_floating_point():
        return t.to(device, dtype)
    return t.to(device)


class GraphSet:
    """A list of PyG ``Data`` graphs that indexes, slices and collates like a 1-D tensor."""

    def __init__(self, graphs: list[Data], fields: tuple[str, ...] = FIELDS):
        self.graphs, self.fields = list(graphs), fields

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx) -> "GraphSet":
        if isinstance(idx, slice):
            return GraphSet(self.graphs[idx], self.fields)
        if isinstance(idx, torch.Tensor):
            idx = idx.tolist()
        if isinstance(idx, int):
            idx = [idx]
        return GraphSet([self.graphs[i] for i in idx], self.fields)

    def dim(self) -> int:
        return 1

    @property
    def shape(self) -> tuple[int]:
        return (len(self.graphs),)

    def float(self) -> "GraphSet":
        return self

    def repeat(self, reps: int, *_) -> "GraphSet":
        return GraphSet(self.graphs * reps, self.fields)

    def to(self, device=None, dtype=None) -> GraphInputs:
        batch = Batch.from_data_list(self.graphs)
        return GraphInputs(_move(batch[f], device, dtype) for f in self.fields)


def graphs_from_arrays(arrays: dict, node_field: str = "x") -> list[Data]:
    """Rebuild graphs from the flat arrays of :func:`graphs_to_arrays` (what the cache holds)."""
    out = []
    nodes, edges = arrays["node_offsets"], arrays["edge_offsets"]
    for i in range(len(nodes) - 1):
        a, b, c, d = nodes[i], nodes[i + 1], edges[i], edges[i + 1]
        out.append(Data(**{node_field: torch.from_numpy(arrays["x"][a:b])},
                        edge_index=torch.from_numpy(arrays["edge_index"][:, c:d].astype(np.int64)),
                        edge_attr=torch.from_numpy(arrays["edge_attr"][c:d]), num_nodes=int(b - a)))
    return out


def graphs_to_arrays(xs: list[np.ndarray], edge_indices: list[np.ndarray],
                     edge_attrs: list[np.ndarray]) -> dict:
    """Graphs as flat arrays with offsets (local node ids per graph), for ``np.savez``."""
    node_counts = [len(x) for x in xs]
    edge_counts = [e.shape[1] for e in edge_indices]
    return {"x": np.concatenate(xs), "edge_index": np.concatenate(edge_indices, axis=1),
            "edge_attr": np.concatenate(edge_attrs),
            "node_offsets": np.concatenate([[0], np.cumsum(node_counts)]),
            "edge_offsets": np.concatenate([[0], np.cumsum(edge_counts)])}


def per_graph_means(arrays: dict, column_source: str) -> np.ndarray:
    """Mean of every column of ``arrays[column_source]`` (node or edge features) per graph."""
    offsets = arrays["node_offsets" if column_source == "x" else "edge_offsets"]
    values = arrays[column_source].astype(np.float64)
    values = values.reshape(len(values), -1)
    counts = np.diff(offsets)
    sums = np.zeros((len(counts), values.shape[1]))
    np.add.at(sums, np.repeat(np.arange(len(counts)), counts), values)
    return sums / np.maximum(counts, 1)[:, None]
