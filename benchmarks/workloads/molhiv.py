"""Molhiv: ogbg-molhiv proxy (paper Table II, GIN, molecule graphs, ROC-AUC).

Proxy: real molecules shipped in the rdkit wheel (the NCI ``first_5K`` set, from the same NCI/DTP
collection as the HIV screen, and the 10,000 WEHI screening compounds), featurised exactly like
ogbg-molhiv by ``ogb.utils.smiles2graph`` (9 categorical atom features, 3 bond features). There
are no HIV labels offline; the label is whether an RDKit PAINS filter matches (a deterministic
substructure rule, about 8% positives against molhiv's 3.5%).

Ground truth: PAINS patterns never test chirality or double-bond stereo. The generator checks
this on every molecule (the label of the molecule with its stereochemistry removed is the same),
so atom feature ``chirality`` and bond feature ``bond_stereo`` are known-irrelevant inputs.

Model: OGB's GIN for ogbg-molhiv (AtomEncoder, 3 GIN layers of width 64 with their own
BondEncoder, ``relu(x_j + e_ij)`` messages, ``(1 + eps) x``, an MLP with BatchNorm), mean pooling.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import MessagePassing, global_mean_pool

from ..graph_data import GraphSet, graphs_from_arrays, graphs_to_arrays, per_graph_means
from .base import Data, Spec, cached, split

SPEC = Spec(name="molhiv", title="Molhiv", proxy="rdkit NCI + WEHI molecules, OGB featurisation, "
            "PAINS-alert label", task="classification", metric="rocauc", epochs=20,
            batch_size=64, lr=2e-3, budget=0.2, feature_cost=0.05, paper_model="GIN", bench_batch=256,
            quick_epochs=2, requires=("rdkit", "ogb"))

ATOM_NAMES = ["atomic_num", "chirality", "degree", "formal_charge", "num_Hs", "radical_e",
              "hybridization", "is_aromatic", "is_in_ring"]
BOND_NAMES = ["bond_type", "bond_stereo", "is_conjugated"]
SIZES = {"quick": (1600, 400, 400), "full": (None, 1500, 1500)}


def _smiles() -> list[str]:
    import csv
    from pathlib import Path

    from rdkit import RDConfig
    data = Path(RDConfig.RDDataDir)
    nci = [line.split()[0] for line in (data / "NCI" / "first_5K.smi").read_text().splitlines()
           if line.strip()]
    with open(data / "Pains" / "test_data" / "wehi_mols.csv") as f:
        wehi = [row[0] for row in csv.reader(f) if row]
    return nci + wehi


def _featurise() -> dict:
    from ogb.utils import smiles2graph
    from rdkit import Chem, RDLogger
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams
    RDLogger.DisableLog("rdApp.*")
    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    catalog = FilterCatalog(params)
    xs, edges, attrs, labels, stereo_free = [], [], [], [], 0
    for smi in _smiles():
        mol = Chem.MolFromSmiles(smi)
        if mol is None or mol.GetNumAtoms() < 2:
            continue
        graph = smiles2graph(Chem.MolToSmiles(mol))   # a raw NCI SMILES can crash smiles2graph
        label = catalog.HasMatch(mol)
        flat = Chem.Mol(mol)
        Chem.RemoveStereochemistry(flat)
        if catalog.HasMatch(flat) != label:
            raise AssertionError(f"PAINS label depends on stereochemistry for {smi}")
        stereo_free += 1
        xs.append(graph["node_feat"].astype(np.int64))
        edges.append(graph["edge_index"].astype(np.int32))
        attrs.append(graph["edge_feat"].astype(np.int64))
        labels.append(int(label))
    return {**graphs_to_arrays(xs, edges, attrs), "y": np.array(labels),
            "stereo_checked": np.array(stereo_free)}


def data(size: str, seed: int) -> Data:
    arrays = cached("molhiv", {"version": 1}, _featurise)
    y = arrays["y"]
    n_train, n_val, n_test = SIZES[size]
    order = np.random.default_rng(seed).permutation(len(y))
    if n_train is not None:
        order = order[:n_train + n_val + n_test]
    gt, yt, gv, yv, gs, ys = split(order, order, n_val, n_test, seed)
    graphs = graphs_from_arrays(arrays)
    means = np.concatenate([per_graph_means(arrays, "x"), per_graph_means(arrays, "edge_attr")], 1)

    def sets(ids):
        return GraphSet([graphs[i] for i in ids])

    def labels(ids):
        return torch.as_tensor(y[ids], dtype=torch.long)
    return Data(sets(gt), labels(yt), sets(gv), labels(yv), sets(gs), labels(ys),
                feature_names={"x": ATOM_NAMES, "edge_attr": BOND_NAMES},
                irrelevant={"x": [ATOM_NAMES.index("chirality")],
                            "edge_attr": [BOND_NAMES.index("bond_stereo")]},
                output_names=["pains"], raw_x=means[yt], raw_y=y[yt, None],
                notes=[f"{len(y)} molecules ({int(y.sum())} PAINS positives, "
                       f"{y.mean():.1%}); stereo-independence of the label checked on "
                       f"{int(arrays['stereo_checked'])}; Pearson |rho| is of per-graph mean "
                       "feature codes with the label"])


class GINConv(MessagePassing):
    """OGB's GIN layer: ``mlp((1 + eps) x + sum_j relu(x_j + bond_encoder(e_ij)))``."""

    def __init__(self, dim: int):
        from ogb.graphproppred.mol_encoder import BondEncoder
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(),
                                 nn.Linear(2 * dim, dim))
        self.eps = nn.Parameter(torch.zeros(1))
        self.bond_encoder = BondEncoder(emb_dim=dim)

    def forward(self, x, edge_index, edge_attr):
        edge_embedding = self.bond_encoder(edge_attr)
        return self.mlp((1 + self.eps) * x
                        + self.propagate(edge_index, x=x, edge_attr=edge_embedding))

    def message(self, x_j, edge_attr):
        return torch.relu(x_j + edge_attr)


class MolGIN(nn.Module):
    def __init__(self, dim: int = 64, layers: int = 3):
        from ogb.graphproppred.mol_encoder import AtomEncoder
        super().__init__()
        self.atom_encoder = AtomEncoder(emb_dim=dim)
        self.convs = nn.ModuleList(GINConv(dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(layers))
        self.head = nn.Linear(dim, 2)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.atom_encoder(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return self.head(global_mean_pool(h, batch))


def model(d: Data) -> nn.Module:
    return MolGIN()
