"""PPA: ogbg-ppa proxy (paper Table II, GCN, protein association neighbourhoods, 37 taxa).

Proxy: stochastic-block-model graphs of about 60 nodes in 6 classes (2-4 blocks, denser or
sparser blocks), with 7 STRING-like edge features in [0, 1]. Edge channels 0-2 are drawn around
a class-dependent pattern; channels 3-6 are Beta(2, 5) noise that never depends on the class, so
they are the ground-truth irrelevant inputs. As in ogbg-ppa, every node starts from one constant
embedding and all information enters through the graph and its edge features.

Model: the OGB GCN for ogbg-ppa (3 layers of width 64, a ``Linear(7, 64)`` edge encoder per
layer, a root embedding, symmetric degree normalisation, LayerNorm), mean pooling, linear head.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import MessagePassing, global_mean_pool

from ..graph_data import GraphSet, graphs_from_arrays, graphs_to_arrays, per_graph_means
from .base import Data, Spec, cached, split

SPEC = Spec(name="ppa", title="PPA", proxy="SBM graphs with 7 STRING-like edge features "
            "(3 informative, 4 noise), constant node input", task="classification",
            metric="acc", epochs=30, batch_size=64, lr=3e-3, budget=0.2, feature_cost=0.05, paper_model="GCN",
            bench_batch=256, quick_epochs=2)

CLASSES, EDGE_FEATURES, INFORMATIVE = 6, 7, 3
SHIFT = 0.04
SIZES = {"quick": (600, 150, 150), "full": (3000, 500, 500)}
EDGE_NAMES = [f"string_{i}" for i in range(EDGE_FEATURES)]


def _graph(rng: np.random.Generator, c: int, pattern: np.ndarray):
    n = int(np.clip(round(rng.normal(60, 12)), 20, 110))
    blocks = rng.integers(0, 2 + c % 3, size=n)
    p_in = 0.10 if c < 3 else 0.14
    prob = np.where(blocks[:, None] == blocks[None, :], p_in, 0.02)
    upper = np.triu(rng.random((n, n)) < prob, k=1)
    src, dst = np.nonzero(upper)
    feats = rng.beta(2, 5, size=(len(src), EDGE_FEATURES))
    feats[:, :INFORMATIVE] = np.clip(
        rng.normal(0.5 + SHIFT * pattern[c], 0.3, size=(len(src), INFORMATIVE)), 0, 1)
    edge_index = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)
    return np.zeros(n, np.int64), edge_index.astype(np.int32), \
        np.concatenate([feats, feats]).astype(np.float32)


def _generate(n_graphs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    # distinct corners of the cube: every class shifts its informative channels its own way
    pattern = np.array([[1.0 if (c + 1) >> b & 1 else -1.0 for b in range(INFORMATIVE)]
                        for c in range(CLASSES)])
    labels = rng.integers(0, CLASSES, size=n_graphs)
    xs, edges, attrs = zip(*(_graph(rng, int(c), pattern) for c in labels))
    return {**graphs_to_arrays(list(xs), list(edges), list(attrs)), "y": labels}


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    total = n_train + n_val + n_test
    arrays = cached("ppa", {"n": total, "seed": seed, "shift": SHIFT},
                    lambda: _generate(total, seed))
    graphs = graphs_from_arrays(arrays)
    y = arrays["y"]
    gt, yt, gv, yv, gs, ys = split(np.arange(len(y)), np.arange(len(y)), n_val, n_test, seed)
    means = per_graph_means(arrays, "edge_attr")
    onehot = np.eye(CLASSES)[y]

    def sets(order):
        return GraphSet([graphs[i] for i in order])

    def labels(order):
        return torch.as_tensor(y[order], dtype=torch.long)
    return Data(sets(gt), labels(yt), sets(gv), labels(yv), sets(gs), labels(ys),
                feature_names={"edge_attr": EDGE_NAMES},
                irrelevant={"edge_attr": list(range(INFORMATIVE, EDGE_FEATURES))},
                output_names=[f"class_{c}" for c in range(CLASSES)],
                raw_x=means[yt], raw_y=onehot[yt],
                notes=[f"{total} graphs, mean {np.diff(arrays['node_offsets']).mean():.1f} nodes, "
                       f"edge-feature shift {SHIFT}; Pearson |rho| is of per-graph mean edge "
                       "features with the one-hot class"])


class EdgeGCNConv(MessagePassing):
    """OGB's ``GCNConv`` for ogbg-ppa: ``norm * relu(x_j + W_e e_ij)`` plus a root term."""

    def __init__(self, dim: int, edge_features: int):
        super().__init__(aggr="add")
        self.linear = nn.Linear(dim, dim)
        self.root_emb = nn.Embedding(1, dim)
        self.edge_encoder = nn.Linear(edge_features, dim)

    def forward(self, x, edge_index, edge_attr):
        x = self.linear(x)
        edge_embedding = self.edge_encoder(edge_attr)
        row, col = edge_index
        deg = torch.zeros(x.size(0), dtype=x.dtype, device=x.device).scatter_add_(
            0, row, torch.ones(row.size(0), dtype=x.dtype, device=x.device)) + 1
        norm = deg[row].rsqrt() * deg[col].rsqrt()
        return (self.propagate(edge_index, x=x, edge_attr=edge_embedding, norm=norm)
                + torch.relu(x + self.root_emb.weight) / deg.view(-1, 1))

    def message(self, x_j, edge_attr, norm):
        return norm.view(-1, 1) * torch.relu(x_j + edge_attr)


class PPAGCN(nn.Module):
    def __init__(self, dim: int = 64, layers: int = 3, classes: int = CLASSES):
        super().__init__()
        self.node_encoder = nn.Embedding(1, dim)
        self.convs = nn.ModuleList(EdgeGCNConv(dim, EDGE_FEATURES) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.head = nn.Linear(dim, classes)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.node_encoder(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return self.head(global_mean_pool(h, batch))


def model(d: Data) -> nn.Module:
    return PPAGCN()


def peer_options(model: nn.Module) -> dict:
    """What a Torch-Pruning user must add for this model: the root embeddings are added to the
    node channels outside any layer it knows, so they are declared as channel-dim-1 parameters."""
    return {"unwrapped_parameters": [(conv.root_emb.weight, 1) for conv in model.convs]}
