"""Graph neural networks: message passing is transparent, pooling is dynamic, exact."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from tests.test_exactness_zoo import randomize_gates

pytest.importorskip("torch_geometric")
from tests.models.graphs import MoleculeGIN, PooledGIN, graph_dims, random_graphs  # noqa: E402


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_pooled_gin_gates_its_widths_and_exports_with_dynamic_graph_counts():
    torch.manual_seed(0)
    model = PooledGIN().train()
    dims = graph_dims((0, "N"), (1, "E"), (0, "N"))
    gated = lumos.compile(model, example_inputs=random_graphs(4, 0), dynamic_shapes=dims)
    assert {"convs.0.nn.0", "convs.0.nn.3", "convs.1.nn.0", "head.0"} <= set(lumos.gates(gated))
    other = random_graphs(7, 1)                  # more graphs, other sizes
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*other), model.eval()(*other))
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, other) < 1e-5
    assert _params(pruned) < _params(model)
    program = torch.export.export(pruned, random_graphs(4, 0), dynamic_shapes=dims)
    torch.testing.assert_close(program.module()(*other), pruned(*other))


def test_molecule_gin_edge_embeddings_join_the_node_channels():
    """The paper's Eq. 9: relu(x_j + edge embedding) ties the bond tables' columns to the
    atom embedding's, so both shrink together (its Fig. 6)."""
    torch.manual_seed(0)
    model = MoleculeGIN().eval()
    dims = graph_dims((0, "N"), (1, "E"), (0, "E"), (0, "N"))
    gated = lumos.compile(model, example_inputs=random_graphs(4, 0, categorical=True),
                          dynamic_shapes=dims)
    width = lumos.gates(gated)["atom_encoder.tables.0"]
    with torch.no_grad():
        width.log_alpha[:6] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_parameter("atom_encoder.tables.1.weight").shape == (5, 10)
    assert pruned.get_parameter("convs.0.bond_encoder.tables.0.weight").shape == (4, 10)
    other = random_graphs(5, 3, categorical=True)
    assert lumos.verify(gated, pruned, other) < 1e-5
    randomize_gates(gated, seed=4)
    assert lumos.verify(gated, lumos.extract(gated), other) < 1e-5


def test_categorical_atom_and_bond_features_are_selected_and_their_tables_dropped():
    torch.manual_seed(0)
    model = MoleculeGIN().eval()
    names = {"x": ["atomic_num", "chirality", "degree"], "edge_attr": ["bond_type", "stereo"]}
    gated = lumos.compile(model, example_inputs=random_graphs(4, 0, categorical=True),
                          dynamic_shapes=graph_dims((0, "N"), (1, "E"), (0, "E"), (0, "N")),
                          feature_names=names)
    assert lumos.gates(gated)["x"].log_alpha.numel() == 3
    assert lumos.gates(gated)["edge_attr"].log_alpha.numel() == 2
    with torch.no_grad():
        lumos.gates(gated)["x"].log_alpha[1] = -6.0
        lumos.gates(gated)["edge_attr"].log_alpha[0] = -6.0
    pruned = lumos.extract(gated)
    other = random_graphs(6, 1, categorical=True)
    assert lumos.verify(gated, pruned, other) < 1e-6
    assert pruned.get_parameter("atom_encoder.tables.1.weight").numel() == 0
    for layer in (0, 1):           # the bond feature's table goes from every layer
        assert pruned.get_parameter(f"convs.{layer}.bond_encoder.tables.0.weight").numel() == 0
    report = lumos.report(gated)
    assert report.kept_features == {"x": ["atomic_num", "degree"], "edge_attr": ["stereo"]}
    assert report.dropped_features == {"x": ["chirality"], "edge_attr": ["bond_type"]}
    assert report.params_after == report.params_before - (5 + 2 * 4) * 16
    widths = {name: (before, rows, after) for name, _, before, rows, after in report.embeddings}
    assert widths["atom_encoder.tables.1"][1] == 0 and widths["atom_encoder.tables.0"] == (16, 10, 16)
    assert "embedding widths: atom_encoder.tables.0 16 -> 16, atom_encoder.tables.1 dropped" \
        in str(report)


@pytest.mark.filterwarnings("ignore:lumos budget")
def test_fill_budget_drops_a_closed_categorical_feature_table():
    """fill_budget keeps closed layers as capacity, but a closed categorical feature's
    table is emptied and never reopened: its lookup must go with it."""
    torch.manual_seed(0)
    model = MoleculeGIN().eval()
    gated = lumos.compile(model, example_inputs=random_graphs(4, 0, categorical=True),
                          dynamic_shapes=graph_dims((0, "N"), (1, "E"), (0, "E"), (0, "N")),
                          budget=0.6)
    gates = lumos.gates(gated)
    with torch.no_grad():
        gates["x"].log_alpha[0] = -6.0
        gates["edge_attr"].log_alpha[1] = -6.0
        gates["atom_encoder.tables.0"].log_alpha[:8] = -6.0     # room for the fill
    pruned = lumos.extract(gated.eval(), fill_budget=True)
    assert pruned.lumos_kept_inputs == {"x": [1, 2], "edge_attr": [0]}
    assert pruned.get_parameter("atom_encoder.tables.0.weight").numel() == 0
    assert lumos.verify(gated, pruned, random_graphs(6, 1, categorical=True)) < 1e-5



def _with_edge_features(graphs, width: int, seed: int):
    x, edge_index, batch = graphs
    g = torch.Generator().manual_seed(seed)
    return x, edge_index, batch, torch.randn(edge_index.shape[1], width, generator=g)


def _ppa_graphs(seed: int, count: int):
    x, edge_index, batch = random_graphs(count, seed)
    g = torch.Generator().manual_seed(seed)
    return (torch.zeros(x.shape[0], dtype=torch.long), edge_index,
            torch.randn(edge_index.shape[1], 7, generator=g), batch)


def _kinds():
    pyg = pytest.importorskip("torch_geometric.nn")
    from tests.models.graphs import HandWrittenGCN, PPAStyleGCN, PyGStack
    plain = lambda seed, count: random_graphs(count, seed)[:2]  # noqa: E731
    pooled = lambda seed, count: random_graphs(count, seed)     # noqa: E731
    return {
        "pyg_gcn": (lambda: pyg.models.GCN(5, 16, num_layers=2, out_channels=3), plain),
        "pyg_gin": (lambda: pyg.models.GIN(5, 16, num_layers=2, out_channels=3), plain),
        "pyg_sage": (lambda: pyg.models.GraphSAGE(5, 16, num_layers=2, out_channels=3), plain),
        "pyg_gat": (lambda: pyg.models.GAT(5, 16, num_layers=2, out_channels=3), plain),
        "gcn_add_pool": (lambda: PyGStack("gcn", pool="add"), pooled),
        "gin_jk_pools": (lambda: PooledGIN(), pooled),
        "gine_edge_dim": (lambda: PyGStack("gine", edge_dim=3),
                          lambda seed, count: _with_edge_features(random_graphs(count, seed), 3, seed)),
        "gat_two_heads_bn": (lambda: PyGStack("gat", norm="batch", pool="max"), pooled),
        "sage_layernorm": (lambda: PyGStack("sage", norm="layer"), pooled),
        "gcn_graphnorm": (lambda: PyGStack("gcn", norm="graph"), pooled),
        "ogb_molecule_gin": (lambda: MoleculeGIN(),
                             lambda seed, count: random_graphs(count, seed, categorical=True)),
        "ppa_edge_gcn": (lambda: PPAStyleGCN(), _ppa_graphs),
        "hand_written_gcn": (lambda: HandWrittenGCN(), pooled),
        # GRU cells over node and graph states, attention through `x @ att.t()`
        "attentive_fp": (lambda: pyg.models.AttentiveFP(5, 16, 3, edge_dim=3, num_layers=2,
                                                        num_timesteps=2),
                         lambda seed, count: _edges_before_batch(random_graphs(count, seed), 3,
                                                                 seed)),
        # K parallel stacks: `x.unsqueeze(0) @ w` broadcasts, `root_weight[t]` selects
        "arma_stacks": (lambda: PyGStack("arma"), pooled),
    }


def _edges_before_batch(graphs, width: int, seed: int):
    x, edge_index, batch, edge_attr = _with_edge_features(graphs, width, seed)
    return x, edge_index, edge_attr, batch


KINDS = ["pyg_gcn", "pyg_gin", "pyg_sage", "pyg_gat", "gcn_add_pool", "gin_jk_pools",
         "gine_edge_dim", "gat_two_heads_bn", "sage_layernorm", "ogb_molecule_gin",
         "ppa_edge_gcn", "hand_written_gcn", "gcn_graphnorm", "attentive_fp",
         "arma_stacks"]


@pytest.mark.parametrize("kind", KINDS)
def test_gnn_kinds_compile_without_hints_and_extract_exactly(kind):
    from lumos_fx.prunability import smallest_fraction
    make, data = _kinds()[kind]
    torch.manual_seed(0)
    model = make().eval()
    gated = lumos.compile(model, example_inputs=data(0, 4))
    other = data(1, 7)                       # more nodes, edges and graphs
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*other), model(*other))
    assert smallest_fraction(gated) < 0.2, lumos.report(gated)
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, other) < 1e-5
    dims = tuple({d: torch.export.Dim.AUTO for d in (range(t.dim()) if not t.is_floating_point()
                                                     else (0,))} for t in data(0, 4))
    program = torch.export.export(pruned, data(0, 4), dynamic_shapes=dims)
    torch.testing.assert_close(program.module()(*other), pruned(*other))


class AggregationReadout(nn.Module):
    """Graph-level readout through PyG aggregation modules (SchNet's ``readout``)."""

    def __init__(self):
        super().__init__()
        from torch_geometric.nn import aggr
        self.lin = nn.Linear(4, 16)
        self.sum, self.mean = aggr.SumAggregation(), aggr.MeanAggregation()
        self.out = nn.Linear(32, 1)

    def forward(self, x, batch):
        h = torch.relu(self.lin(x))
        return self.out(torch.cat([self.sum(h, batch), self.mean(h, batch)], -1))


def test_aggregation_module_readouts_capture_with_any_number_of_graphs():
    torch.manual_seed(0)
    model = AggregationReadout().eval()
    x, batch = torch.randn(10, 4), torch.tensor([0] * 4 + [1] * 6)
    gated = lumos.compile(model, example_inputs=(x, batch))
    x3, batch3 = torch.randn(12, 4), torch.tensor([0] * 3 + [1] * 4 + [2] * 5)
    torch.testing.assert_close(gated.eval()(x3, batch3), model(x3, batch3))
    with torch.no_grad():
        lumos.gates(gated)["lin"].log_alpha[::2] = -10.0
    assert lumos.verify(gated, lumos.extract(gated), (x3, batch3)) < 1e-5


class InitialResidualGCN(nn.Module):
    """GCNII: each GCN2Conv mixes the initial features back in and adds its weight's
    product to its input through ``addmm(h, h, W)``."""

    def __init__(self, features: int = 5, dim: int = 16):
        super().__init__()
        pyg = pytest.importorskip("torch_geometric.nn")
        self.lin_in, self.head = nn.Linear(features, dim), nn.Linear(dim, 3)
        self.convs = nn.ModuleList(pyg.GCN2Conv(dim, alpha=0.1, theta=0.5, layer=i + 1,
                                                shared_weights=i == 0) for i in range(2))

    def forward(self, x, edge_index):
        h = x0 = torch.relu(self.lin_in(x))
        for conv in self.convs:
            h = torch.relu(conv(h, x0, edge_index))
        return self.head(h)


def test_initial_residual_gcn_prunes_its_hidden_width_through_addmm_residuals():
    from lumos_fx.prunability import smallest_fraction
    torch.manual_seed(0)
    model = InitialResidualGCN().eval()
    x, edge_index = random_graphs(4, 0)[:2]
    dims = ({0: torch.export.Dim("nodes", min=2)}, {1: torch.export.Dim("edges", min=2)})
    gated = lumos.compile(model, example_inputs=(x, edge_index), dynamic_shapes=dims)
    assert smallest_fraction(gated) < 0.05, lumos.report(gated)   # was 0.86: addmm pinned
    other = random_graphs(7, 1)[:2]
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert pruned.lin_in.weight.shape[0] < 16
    assert lumos.verify(gated, pruned, other) < 1e-5


@pytest.mark.parametrize("conv", ["eg", "rgcn"])
def test_layers_that_count_nodes_or_edges_from_data_capture_and_extract_exactly(conv):
    from lumos_fx.prunability import smallest_fraction
    from tests.models.graphs import CountingConvStack

    def data(seed, count):
        x, edge_index = random_graphs(count, seed)[:2]
        g = torch.Generator().manual_seed(seed)
        types = (torch.randint(0, 3, (edge_index.shape[1],), generator=g),)
        return (x, edge_index) + (types if conv == "rgcn" else ())

    torch.manual_seed(0)
    model = CountingConvStack(conv).eval()
    edges = torch.export.Dim("edges", min=2)
    dims = ({0: torch.export.Dim("nodes", min=2)}, {1: edges}) + (
        ({0: edges},) if conv == "rgcn" else ())
    import torch_geometric.backend
    heuristic = torch_geometric.backend.use_segment_matmul
    gated = lumos.compile(model, example_inputs=data(0, 4), dynamic_shapes=dims)
    assert torch_geometric.backend.use_segment_matmul is heuristic      # restored
    other = data(1, 7)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*other), model(*other))
    assert smallest_fraction(gated) < 0.05, lumos.report(gated)
    randomize_gates(gated, seed=1)
    assert lumos.verify(gated, lumos.extract(gated), other) < 1e-5
