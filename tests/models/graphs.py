"""Graph models as users write them with PyG, and batches of small random graphs."""
from __future__ import annotations

import torch
from torch import nn

pyg = None
try:  # the models need PyG; tests skip when it is absent
    import torch_geometric.nn as pyg
    from torch_geometric.nn import MessagePassing

    # OGB's GCN layer with edge features and a root embedding (the paper's Eq. 10), as the
    # PPA workload uses it
    from benchmarks.workloads.ppa import EdgeGCNConv
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


class PPAStyleGCN(nn.Module):
    """PPA-like: nodes start from one constant embedding, 7 continuous edge features."""

    def __init__(self, dim: int = 16, edge_features: int = 7, classes: int = 3):
        super().__init__()
        self.node_embedding = nn.Embedding(1, dim)
        self.convs = nn.ModuleList(EdgeGCNConv(dim, edge_features) for _ in range(2))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.node_embedding(x)
        for conv, norm in zip(self.convs, self.norms):
            h = torch.relu(norm(conv(h, edge_index, edge_attr)))
        return self.head(pyg.global_add_pool(h, batch))


class PyGStack(nn.Module):
    """A stack of PyG convolutions, optional norms, pooling and an MLP head; ``skip`` adds
    residual connections, ``jk`` concatenates every layer's output (jumping knowledge)."""

    def __init__(self, conv: str, features: int = 5, dim: int = 16, norm: str | None = None,
                 pool: str | None = "mean", edge_dim: int | None = None, layers: int = 2,
                 skip: bool = False, jk: bool = False):
        super().__init__()
        def make(cin):
            if conv == "gcn":
                return pyg.GCNConv(cin, dim)
            if conv == "gine":
                return pyg.GINEConv(nn.Sequential(nn.Linear(cin, dim), nn.ReLU(),
                                                  nn.Linear(dim, dim)), edge_dim=edge_dim)
            if conv == "sage":
                return pyg.SAGEConv(cin, dim)
            if conv == "gat":
                return pyg.GATConv(cin, dim // 2, heads=2)
            if conv == "arma":
                return pyg.ARMAConv(cin, dim, num_stacks=2, num_layers=2)
            raise ValueError(conv)
        self.convs = nn.ModuleList([make(features)] + [make(dim) for _ in range(layers - 1)])
        norms = {"layer": lambda: nn.LayerNorm(dim), "batch": lambda: nn.BatchNorm1d(dim),
                 "graph": lambda: pyg.GraphNorm(dim), None: lambda: nn.Identity()}
        self.norms = nn.ModuleList(norms[norm]() for _ in range(layers))
        self.pool, self.skip, self.jk = pool, skip, jk
        self.head = nn.Sequential(nn.Linear(dim * (layers if jk else 1), dim), nn.ReLU(),
                                  nn.Linear(dim, 2))
        self.edge_dim = edge_dim

    def forward(self, x, edge_index, batch, edge_attr=None):
        outputs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(x, edge_index, edge_attr) if self.edge_dim else conv(x, edge_index)
            h = torch.relu(norm(h, batch) if isinstance(norm, pyg.GraphNorm) else norm(h))
            x = x + h if self.skip and i > 0 else h
            outputs.append(x)
        if self.jk:
            x = torch.cat(outputs, dim=-1)
        if self.pool is None:
            return self.head(x)
        pool = {"add": pyg.global_add_pool, "mean": pyg.global_mean_pool,
                "max": pyg.global_max_pool}[self.pool]
        return self.head(pool(x, batch))


class HandWrittenGCN(nn.Module):
    """A GCN written with index_select / index_add, no PyG."""

    def __init__(self, features: int = 5, dim: int = 16):
        super().__init__()
        self.lins = nn.ModuleList([nn.Linear(features, dim), nn.Linear(dim, dim)])
        self.head = nn.Linear(dim, 2)

    def forward(self, x, edge_index, batch):
        src, dst = edge_index[0], edge_index[1]
        for lin in self.lins:
            h = lin(x)
            messages = h.index_select(0, src)
            x = torch.relu(torch.zeros_like(h).index_add(0, dst, messages) + h)
        return self.head(x)


class CountingConvStack(nn.Module):
    """Two PyG layers that count nodes or edges from tensor data: EGConv adds self-loops
    without a node count (``int(edge_index.max()) + 1``), RGCNConv's segment-matmul
    heuristic takes ``int()`` of its per-relation edge counts."""

    def __init__(self, conv: str, features: int = 5, dim: int = 16, relations: int = 3):
        super().__init__()
        self.relational = conv == "rgcn"
        make = {"eg": lambda: pyg.EGConv(dim, dim, aggregators=["sum", "mean"], num_heads=2,
                                          num_bases=2),
                "rgcn": lambda: pyg.RGCNConv(dim, dim, num_relations=relations)}[conv]
        self.lin_in, self.convs = nn.Linear(features, dim), nn.ModuleList([make(), make()])
        self.head = nn.Linear(dim, 3)

    def forward(self, x, edge_index, edge_type=None):
        h = torch.relu(self.lin_in(x))
        for conv in self.convs:
            extra = (edge_type,) if self.relational else ()
            h = torch.relu(conv(h, edge_index, *extra))
        return self.head(h)
