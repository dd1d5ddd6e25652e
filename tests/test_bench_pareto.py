"""Pareto points from benchmark records: one per method and budget, peers that missed the
size left out, S2 wins counted per (workload, budget)."""
from __future__ import annotations

import importlib.util
import json


from benchmarks import pareto


def _record(budget: float, s2: float, s1: float, peers: dict) -> dict:
    return {"workload": "w", "title": "W", "metric": "r2", "higher_is_better": True,
            "budget": budget, "baseline": {"metric": 0.9, "params": 1000},
            "lumos": {"s2": {"metric": s2, "params": int(1000 * budget)},
                      "s1": {"metric": s1, "params": int(1000 * budget)}},
            "peers": {name: {"metric": m, "params": p, "reached_target": p <= 1000 * budget}
                      for name, (m, p) in peers.items()}}


def test_points_plot_and_wins(tmp_path):
    (tmp_path / "budget_0.3").mkdir()
    (tmp_path / "w.json").write_text(json.dumps(_record(
        0.1, 0.80, 0.70, {"l1": (0.82, 95), "bn_slimming": (0.99, 1000)})))
    (tmp_path / "budget_0.3" / "w.json").write_text(json.dumps(_record(
        0.3, 0.88, 0.86, {"l1": (0.85, 290), "depgraph": (0.87, 290)})))
    found = pareto.points(tmp_path)
    curves = found["W"]["curves"]
    assert curves["lumos s2"] == [(0.1, 0.80, 0.1), (0.3, 0.88, 0.3)]
    assert curves["l1"] == [(0.095, 0.82, 0.1), (0.29, 0.85, 0.3)]
    assert "bn_slimming" not in curves          # stayed at full size: not a point at 10%
    assert pareto.pareto_wins(found) == (1, 2)  # behind L1 at 0.1, ahead of both at 0.3
    lines = "\n".join(pareto.section(tmp_path))
    assert "1 of 2 (workload, budget) points" in lines
    assert "| W | 0.3 | 30.0% / 0.8800 | 30.0% / 0.8600 | 29.0% / 0.8500 | - | 29.0% / 0.8700 |" in lines
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "pareto.png").stat().st_size > 0


def test_a_single_budget_gives_no_section(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps(_record(0.2, 0.8, 0.7, {"l1": (0.7, 190)})))
    assert pareto.section(tmp_path) == []
