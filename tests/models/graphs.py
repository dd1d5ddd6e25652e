"""Graph models as users write them with PyG, and batches of small random graphs."""
from __future__ import annotations

import torch
from torch import nn

pyg = None
try:  # the models need PyG; tests skip when it is absent
    import torch_geometric.nn as pyg
    from torch_geometric.nn import MessagePassing
except ImportError:  # pragma: no cover
    MessagePassing = nn.Module


class CategoricalEncoder(nn.Module):
    """OGB's AtomEncoder/BondEncoder: one embedding table per categorical feature, summed."""

    def __init__(self, vocab_sizes, dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(size, dim) for size in vocab_sizes)

    def forward(self, x):
        out = 0
        for i, table in enumerate(self.tables):
            out = out + table(x[:, i])
        return out


class GINConvWithEdges(MessagePassing):
    """OGB-style GIN layer: relu(x_j + edge embedding) messages, (1 + eps) * x, an MLP."""

    def __init__(self, dim: int, bond_vocab=(4, 3)):
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(),
                                 nn.Linear(2 * dim, dim))
        self.eps = nn.Parameter(torch.zeros(1))
        self.bond_encoder = CategoricalEncoder(bond_vocab, dim)

    def forward(self, x, edge_index, edge_attr):
        edge_embedding = self.bond_encoder(edge_attr)
        return self.mlp((1 + self.eps) * x + self.propagate(edge_index, x=x, edge_attr=edge_embedding))

    def message(self, x_j, edge_attr):
        return torch.relu(x_j + edge_attr)


class MoleculeGIN(nn.Module):
    """OGB-molhiv-style graph classifier: atom encoder, GIN layers, mean pooling, a head."""

    ATOM_VOCAB = (10, 5, 4)

    def __init__(self, dim: int = 16, layers: int = 2):
        super().__init__()
        self.atom_encoder = CategoricalEncoder(self.ATOM_VOCAB, dim)
        self.convs = nn.ModuleList(GINConvWithEdges(dim) for _ in range(layers))
        self.head = nn.Linear(dim, 1)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.atom_encoder(x)
        for conv in self.convs:
            h = torch.relu(conv(h, edge_index, edge_attr))
        return self.head(pyg.global_mean_pool(h, batch))


class PooledGIN(nn.Module):
    """PyG's GINConv stack with jumping-knowledge pooling (add, mean, max) and an MLP head."""

    def __init__(self, features: int = 5, dim: int = 32):
        super().__init__()
        self.convs = nn.ModuleList([
            pyg.GINConv(nn.Sequential(nn.Linear(features, dim), nn.BatchNorm1d(dim), nn.ReLU(),
                                      nn.Linear(dim, dim))),
            pyg.GINConv(nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)))])
        self.head = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, x, edge_index, batch):
        hs = []
        for conv in self.convs:
            x = torch.relu(conv(x, edge_index))
            hs.append(x)
        return self.head(torch.cat([pyg.global_add_pool(hs[0], batch),
                                    pyg.global_mean_pool(hs[1], batch),
                                    pyg.global_max_pool(hs[1], batch)], 1))


def random_graphs(count: int, seed: int, features: int = 5, categorical: bool = False):
    """``(x, edge_index, [edge_attr,] batch)`` for ``count`` graphs of 3-6 nodes."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(3, 7, (count,), generator=g)
    batch = torch.repeat_interleave(torch.arange(count), sizes)
    nodes = int(sizes.sum())
    src = torch.randint(0, nodes, (2 * nodes,), generator=g)
    start = (torch.cumsum(sizes, 0) - sizes)[batch[src]]
    dst = start + torch.randint(0, 100, src.shape, generator=g) % sizes[batch[src]]
    edge_index = torch.stack([src, dst])
    if not categorical:
        return torch.randn(nodes, features, generator=g), edge_index, batch
    x = torch.stack([torch.randint(0, v, (nodes,), generator=g) for v in MoleculeGIN.ATOM_VOCAB], 1)
    edge_attr = torch.stack([torch.randint(0, v, (src.numel(),), generator=g) for v in (4, 3)], 1)
    return x, edge_index, edge_attr, batch


def graph_dims(*specs):
    """``dynamic_shapes`` for graph inputs: 'N' (nodes) or 'E' (edges) per dim spec."""
    dims = {"N": torch.export.Dim("nodes", min=2), "E": torch.export.Dim("edges", min=2)}
    return tuple({dim: dims[name]} for dim, name in specs)
