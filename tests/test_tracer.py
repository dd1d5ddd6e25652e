"""LumosTracer leaf policy, PyG support, and readable TraceErrors."""
from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import lumos_fx.tracer
from lumos_fx.errors import InputError, TraceError
from lumos_fx.tracer import LumosTracer, trace

try:  # a bare global name, as most PyG code spells it; autowrapped by the tracer
    from torch_geometric.nn import global_max_pool
except ImportError:
    global_max_pool = None


def _calls(gm, op="call_module"):
    return [n.target for n in gm.graph.nodes if n.op == op]


class MyBlock(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(self.fc(x)) + x


class WithBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.block = MyBlock()

    def forward(self, x):
        return self.block(self.inp(x))


class DataDependentIf(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class UsesLen(nn.Module):
    def forward(self, x):
        n = len(x)
        return x / n


class SquareOnes(nn.Module):
    def forward(self, x):
        return x @ torch.ones(x.shape[1], x.shape[1])


class SquareOnesTuple(nn.Module):
    def forward(self, x):
        return x @ torch.ones((x.shape[1], x.shape[1]))


def test_docstring_example_runs():
    assert doctest.testmod(lumos_fx.tracer).failed == 0


def test_mlp_sequential_is_flattened_into_leaves():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    gm = trace(model)
    assert _calls(gm) == ["0", "1", "2"]
    assert type(gm).__name__ == "Sequential"
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x), model(x))


def test_cnn_layers_are_leaves_and_nested_containers_flatten():
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
            self.heads = nn.ModuleList([nn.Linear(8, 2)])

        def forward(self, x):
            return self.heads[0](self.layers(x).mean((2, 3)))

    model = CNN().eval()
    gm = trace(model)
    assert _calls(gm) == ["layers.0", "layers.1", "layers.2", "heads.0"]
    mods = dict(gm.named_modules())
    assert isinstance(mods["layers.0"], nn.Conv2d) and isinstance(mods["layers.1"], nn.BatchNorm2d)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(gm(x), model(x))
    assert _calls(trace(gm)) == _calls(gm)  # a GraphModule re-traces to the same leaves


def test_user_submodule_is_traced_through():
    gm = trace(WithBlock())
    assert _calls(gm) == ["inp", "block.fc"]
    assert "relu" in [getattr(n.target, "__name__", n.target) for n in gm.graph.nodes]


@pytest.mark.parametrize("leaf", ["type", "instance", "name"])
def test_leaf_modules_keeps_a_user_block_whole(leaf):
    model = WithBlock()
    given = {"type": MyBlock, "instance": model.block, "name": "block"}[leaf]
    gm = trace(model, leaf_modules=[given])
    assert _calls(gm) == ["inp", "block"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(gm(x), model(x))


def test_leaf_modules_rejects_junk_and_warns_on_foreign_instance():
    with pytest.raises(InputError, match="leaf_modules"):
        trace(WithBlock(), leaf_modules=[42])
    with pytest.warns(UserWarning, match="not part of the model"):
        trace(WithBlock(), leaf_modules=[MyBlock()])


def test_concrete_args_fix_a_flag():
    class Flagged(nn.Module):
        def forward(self, x, double: bool = False):
            return x * 2 if double else x

    gm = trace(Flagged(), concrete_args={"double": True})
    torch.testing.assert_close(gm(torch.ones(2), True), torch.full((2,), 2.0))


def test_data_dependent_if_quotes_the_line_and_names_remedies():
    with pytest.raises(TraceError) as info:
        trace(DataDependentIf())
    msg = str(info.value)
    assert "if x.sum() > 0:" in msg and __file__ in msg, msg
    assert "DataDependentIf" in msg and "leaf_modules" in msg
    assert "concrete_args" in msg and "torch.fx.wrap" in msg
    assert "cannot depend on tensor values" in msg
    assert isinstance(info.value.__cause__, torch.fx.proxy.TraceError)


def test_failure_in_a_submodule_names_its_class():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), DataDependentIf())

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(TraceError) as info:
        trace(Outer())
    msg = str(info.value)
    assert "leaf_modules=[DataDependentIf]" in msg and "'inner.1'" in msg, msg
    trace(Outer(), leaf_modules=[DataDependentIf])


def test_len_suggests_size_and_quotes_the_line():
    with pytest.raises(TraceError) as info:
        trace(UsesLen())
    msg = str(info.value)
    assert "n = len(x)" in msg and "x.size(0)" in msg, msg


def test_tensor_factory_with_traced_sizes():
    """``torch.ones(T, T)`` with traced ``T`` fails in torch 2.13 (the C arg
    parser sees two Proxy objects); the one-tuple form traces."""
    with pytest.raises(TraceError) as info:
        trace(SquareOnes())
    msg = str(info.value)
    assert "torch.ones(x.shape[1], x.shape[1])" in msg and "torch.ones((n, m))" in msg, msg
    gm = trace(SquareOnesTuple())
    x = torch.randn(2, 5)
    torch.testing.assert_close(gm(x), SquareOnesTuple()(x))


def test_failed_trace_leaves_the_model_unchanged():
    model = DataDependentIf()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TraceError):
        trace(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert "forward" not in model.__dict__ and nn.Module.__call__.__name__ == "_wrapped_call_impl"


def test_tracer_is_a_plain_fx_tracer():
    graph = LumosTracer(leaf_modules=[MyBlock]).trace(WithBlock())
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["inp", "block"]


# PyTorch Geometric ---------------------------------------------------------------------

def _graph(num_nodes=7, num_edges=16, features=5, graphs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, features, generator=g)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    batch = torch.arange(num_nodes) * graphs // num_nodes
    return x, edge_index, batch


def test_pyg_gcn_with_global_mean_pool():
    pyg = pytest.importorskip("torch_geometric.nn")

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = pyg.GCNConv(5, 16)
            self.conv2 = pyg.GCNConv(16, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x, edge_index, batch):
            x = torch.relu(self.conv1(x, edge_index))
            x = torch.relu(self.conv2(x, edge_index))
            x = pyg.global_mean_pool(x, batch)  # attribute access, not a bare name
            return self.head(x)

    model = GCN().eval()
    gm = trace(model)
    assert _calls(gm) == ["conv1", "conv2", "head"]
    assert pyg.global_mean_pool in _calls(gm, "call_function")
    inputs = _graph()
    torch.testing.assert_close(gm(*inputs), model(*inputs))


def test_pyg_aggregation_submodule_is_a_leaf_and_restored():
    pyg = pytest.importorskip("torch_geometric.nn")
    from torch_geometric.nn.aggr import Aggregation, SumAggregation
    original_call = Aggregation.__dict__["__call__"]

    class SumNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = pyg.SAGEConv(5, 8)
            self.aggr = SumAggregation()

        def forward(self, x, edge_index, batch):
            h = self.conv(x, edge_index)
            return self.aggr(h, batch) + pyg.global_add_pool(h, batch) + global_max_pool(h, batch)

    model = SumNet()
    gm = trace(model)
    assert _calls(gm) == ["conv", "aggr"]
    assert {pyg.global_add_pool, global_max_pool} <= set(_calls(gm, "call_function"))
    assert Aggregation.__dict__["__call__"] is original_call
    assert "__call__" not in SumAggregation.__dict__
    inputs = _graph(seed=1)
    torch.testing.assert_close(gm(*inputs), model(*inputs))

    class Broken(SumNet):
        def forward(self, x, edge_index, batch):
            return self.aggr(x, batch) if x.sum() > 0 else x

    with pytest.raises(TraceError):
        trace(Broken())
    assert Aggregation.__dict__["__call__"] is original_call


def test_pyg_basic_gnn_needs_concrete_none_args_and_says_so():
    pyg = pytest.importorskip("torch_geometric.nn")
    model = pyg.models.GCN(5, 16, num_layers=2, out_channels=3).eval()
    with pytest.raises(TraceError) as info:
        trace(model)
    assert "'num_sampled_nodes_per_hop': None" in str(info.value), str(info.value)
    unused = ["edge_weight", "edge_attr", "batch", "batch_size",
              "num_sampled_nodes_per_hop", "num_sampled_edges_per_hop"]
    gm = trace(model, concrete_args=dict.fromkeys(unused))
    assert _calls(gm)[0] == "convs.0"
    x, edge_index, _ = _graph()
    torch.testing.assert_close(gm(x, edge_index), model(x, edge_index))


class Untraceable(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        if self.kind == "int":
            return x * int(x.shape[0])
        if self.kind == "range":
            return sum(x for _ in range(x.shape[0]))
        if self.kind == "loop":
            return torch.stack([row for row in x])
        return x.view(*x.shape)


@pytest.mark.parametrize("kind, line, fix", [
    ("int", "return x * int(x.shape[0])", "x.size(0)"),
    ("range", "return sum(x for _ in range(x.shape[0]))", "x.size(0)"),
    ("loop", "return torch.stack([row for row in x])", "x.unbind()"),
    ("star", "return x.view(*x.shape)", "x.unbind()"),
])
def test_other_untraceable_lines_are_quoted(kind, line, fix):
    with pytest.raises(TraceError, match="Untraceable") as info:
        trace(Untraceable(kind))
    msg = str(info.value)
    assert line in msg and fix in msg, msg


def test_compile_honours_a_leaf_module_instance_of_the_users_model():
    import lumos_fx as lumos
    model = WithBlock()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),), leaf_modules=[model.block])
    calls = [n.target for n in gated.graph.nodes if n.op == "call_module"]
    assert "block" in calls and "block.fc" not in calls
