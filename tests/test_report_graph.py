"""The layer graph of the HTML report: rows in run order, residual streams chained,
joined groups (attention's q, k, v) read whole, removed layers marked."""
from __future__ import annotations

from lumos_fx.report_graph import graph_svg, layer_graph


def _group(name, producers, consumers, kept=4, total=8, pinned=None, kind="channels"):
    return {"name": name, "kind": kind, "kept": kept, "total": total, "pinned": pinned,
            "producers": producers, "consumers": consumers, "followers": []}


def _edges(data):
    nodes, edges = layer_graph(data)
    names = [n.name for n in nodes]
    return names, {(names[a], names[b]) for a, b in edges}


BLOCK = {
    "groups": [
        _group("x", ["x"], ["embed"], kind="input"),
        # the residual stream: embed, then attention's out-projection adds to it
        _group("embed", ["embed", "proj"], ["norm1", "q", "k", "v", "norm2", "head"]),
        _group("q", ["q", "k", "v"], ["proj"]),              # heads: joined by attention
        _group("head", ["head"], [], kept=8, pinned="model output"),
    ],
    "layer_order": ["x", "embed", "norm1", "q", "k", "v", "proj", "norm2", "head"],
    "removed_layers": ["k"],
}


def test_rows_follow_the_run_order_and_streams_are_chained():
    names, edges = _edges(BLOCK)
    assert names == ["x", "embed", "norm1", "q", "k", "v", "proj", "norm2", "head"]
    assert ("embed", "proj") in edges                       # the residual add
    assert ("embed", "q") in edges and ("proj", "q") not in edges
    assert ("proj", "head") in edges and ("embed", "head") not in edges   # latest update
    assert {("q", "proj"), ("k", "proj"), ("v", "proj")} <= edges        # joined: all read
    assert ("q", "k") not in edges


def test_without_a_run_order_every_producer_feeds_every_reader():
    data = dict(BLOCK, layer_order=[])
    _, edges = _edges(data)
    assert {("embed", "head"), ("proj", "head"), ("proj", "q")} <= edges
    assert ("embed", "proj") not in edges


def test_pinned_and_removed_layers_are_marked_in_the_svg():
    nodes, _ = layer_graph(BLOCK)
    by_name = {n.name: n for n in nodes}
    assert by_name["head"].pinned == ["model output"] and by_name["k"].removed
    svg = graph_svg(BLOCK)
    assert svg.count('class="box layer pinned"') == 2      # before and after panels
    assert 'class="box layer removed' in svg and "removed (its input closed)" in svg
