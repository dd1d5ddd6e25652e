"""Smoke test of the benchmark runner: one tiny workload end to end in --quick mode.

Checks that ``python -m benchmarks synthetic --quick`` (and ``ppa --quick``, the graph path:
batches of PyG graphs, node and edge inputs) writes a JSON record with every field the
summary relies on and a SUMMARY.md; never checks timings or accuracy. Peers are skipped when
torch-pruning is missing, plots when matplotlib is.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("tqdm")


def test_quick_synthetic(tmp_path):
    from benchmarks.cli import main

    rc = main(["synthetic", "--quick", "--no-progress", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    rec = json.loads((tmp_path / "synthetic.json").read_text())
    for key in ("workload", "proxy", "metric", "baseline", "lumos", "peers", "speed",
                "train_step", "features", "env"):
        assert key in rec, key
    for key in ("metric", "params", "flops"):
        assert key in rec["baseline"]
    for run in ("s1", "s2"):
        lum = rec["lumos"][run]
        assert "error" not in lum, lum.get("error")
        for key in ("metric", "params", "flops", "param_reduction", "flop_reduction",
                    "exactness_rel_error", "kept_inputs"):
            assert key in lum, key
        assert lum["params"] <= rec["baseline"]["params"]
        sel = rec["features"][run]
        for key in ("kept", "drop_precision", "drop_recall", "all_irrelevant_dropped"):
            assert key in sel
    for name in ("l1", "bn_slimming", "depgraph"):
        assert name in rec["peers"]
    cpu = rec["speed"]["cpu"]
    for name in ("baseline", "lumos_s2"):
        for key in ("latency_b1_ms", "throughput_sps", "memory"):
            assert key in cpu[name]
    assert (tmp_path / "SUMMARY.md").read_text().startswith("# lumos_fx benchmarks")


def test_quick_graph_workload(tmp_path):
    from benchmarks.cli import main

    rc = main(["ppa", "--quick", "--no-progress", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    rec = json.loads((tmp_path / "ppa.json").read_text())
    for run in ("s1", "s2"):
        lum = rec["lumos"][run]
        assert "error" not in lum, lum.get("error")
        assert lum["exactness_rel_error"] < 1e-3
        assert set(lum["kept_inputs"]) == {"edge_attr"}
        sel = rec["features"][run]
        assert sel["n_features"] == 7 and sel["irrelevant"] == [3, 4, 5, 6]
    assert rec["features"]["names"][0] == "edge_attr:string_0"
    assert rec["speed"]["cpu"]["lumos_s2"]["throughput_sps"] > 0
    page = (tmp_path / "ppa_report.html").read_text()
    assert "edge_attr" in page and "<svg" in page
    assert rec["train_step"]["gated_ms"] > 0
