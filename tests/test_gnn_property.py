"""Property test: random GNN stacks (conv type, aggregation, norm, pooling, edge features,
skip and jumping-knowledge connections) stay exact under random gates and export with
dynamic graph sizes. ``LUMOS_HYPOTHESIS_PROFILE=full`` runs more examples."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lumos_fx as lumos
from tests.test_exactness_zoo import randomize_gates

pytest.importorskip("torch_geometric")
from tests.models.graphs import PyGStack, random_graphs  # noqa: E402

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gnn-ci", max_examples=12, derandomize=True, database=None, **_COMMON)
settings.register_profile("gnn-full", max_examples=100, **_COMMON)
PROFILE = "gnn-full" if os.environ.get("LUMOS_HYPOTHESIS_PROFILE") == "full" else "gnn-ci"
pytestmark = pytest.mark.filterwarnings("ignore:lumos. every path from the model inputs")

stacks = st.fixed_dictionaries({
    "conv": st.sampled_from(["gcn", "gine", "sage", "gat"]),
    "norm": st.sampled_from([None, "batch", "layer"]),
    "pool": st.sampled_from([None, "add", "mean", "max"]),
    "layers": st.integers(1, 3),
    "skip": st.booleans(),
    "jk": st.booleans(),
})


def _inputs(options, seed: int, count: int):
    x, edge_index, batch = random_graphs(count, seed)
    if options["conv"] != "gine":
        return x, edge_index, batch
    g = torch.Generator().manual_seed(seed)
    return x, edge_index, batch, torch.randn(edge_index.shape[1], 3, generator=g)


@settings(settings.get_profile(PROFILE))
@given(options=stacks, gate_seed=st.integers(0, 2 ** 16), close_whole=st.sampled_from([0.0, 0.3]))
def test_random_gnn_stacks_are_exact(options, gate_seed, close_whole):
    torch.manual_seed(gate_seed)
    model = PyGStack(edge_dim=3 if options["conv"] == "gine" else None, **options).eval()
    gated = lumos.compile(model, example_inputs=_inputs(options, 0, 3))
    other = _inputs(options, 1, 5)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*other), model(*other))
    randomize_gates(gated, seed=gate_seed, close_whole=close_whole)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, other) < 1e-5
