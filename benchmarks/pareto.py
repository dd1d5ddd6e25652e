"""Pareto curves: test metric against the fraction of parameters kept, lumos vs each peer.

Every full run at a budget (the workload's own, in ``<out>/<workload>.json``, and others, in
``<out>/budget_<b>/<workload>.json``) gives one point per method: lumos S2 and S1 and each
Torch-Pruning peer, the peers matched to S2's size. :func:`section` writes ``pareto.png`` (one
panel per workload with at least two budgets) and returns the SUMMARY.md table of all points.
``pareto_wins`` counts, per budget, where S2 is at least as good as every peer that ran.

    python -c "from benchmarks import pareto; from pathlib import Path; print(pareto.points(Path('benchmarks/results')))"
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from .summary_plots import _plt

METHODS = ["lumos s2", "lumos s1", "l1", "bn_slimming", "depgraph"]
STYLE = {"lumos s2": ("#1f77b4", "o", "-"), "lumos s1": ("#9ecae1", "s", "--"),
         "l1": ("#ff7f0e", "^", "-"), "bn_slimming": ("#2ca02c", "v", "-"),
         "depgraph": ("#d62728", "D", "-")}


def _records(out: Path) -> list[dict]:
    from .summary import load
    recs = [r for r in load(out) if "baseline" in r]
    for sub in sorted(out.glob("budget_*")):
        recs += [r for r in load(sub) if "baseline" in r]
    return recs


def points(out: Path) -> dict[str, dict]:
    """``{workload title: {"metric", "higher", "baseline", "curves": {method: [(kept, metric,
    budget)]}}}`` from every run under ``out``, each curve sorted by the fraction kept."""
    found: dict[str, dict] = {}
    for rec in _records(out):
        entry = found.setdefault(rec["title"], {
            "metric": rec["metric"], "higher": rec["higher_is_better"],
            "baseline": rec["baseline"]["metric"], "curves": defaultdict(list)})
        base = rec["baseline"]["params"]
        runs = {f"lumos {k}": r for k, r in rec.get("lumos", {}).items()}
        # a peer that could not reach lumos's size is not a point at that size
        runs.update({k: r for k, r in rec.get("peers", {}).items()
                     if r.get("reached_target", True)})
        for method, r in runs.items():
            if "metric" in r and "params" in r and math.isfinite(r["metric"]):
                entry["curves"][method].append((r["params"] / base, r["metric"], rec["budget"]))
    for entry in found.values():
        for curve in entry["curves"].values():
            curve.sort()
    return found


def pareto_wins(found: dict[str, dict]) -> tuple[int, int]:
    """(budgets where S2 >= every peer that ran, budgets with a peer) over all workloads."""
    wins = total = 0
    for entry in found.values():
        sign = 1 if entry["higher"] else -1
        s2 = {b: m for _, m, b in entry["curves"].get("lumos s2", [])}
        for budget, metric in s2.items():
            peers = [m for method, curve in entry["curves"].items()
                     if not method.startswith("lumos") for _, m, b in curve if b == budget]
            if peers:
                total += 1
                wins += all(sign * (metric - m) >= 0 for m in peers)
    return wins, total


def plot(path: Path, found: dict[str, dict]) -> str | None:
    plt = _plt()
    swept = {t: e for t, e in sorted(found.items())
             if len(e["curves"].get("lumos s2", [])) >= 2}
    if plt is None or not swept:
        return None
    cols = min(4, len(swept))
    rows = math.ceil(len(swept) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, entry) in zip(axes.flat, swept.items()):
        for method in METHODS:
            curve = entry["curves"].get(method)
            if curve:
                color, marker, line = STYLE[method]
                ax.plot([100 * k for k, _, _ in curve], [m for _, m, _ in curve], line,
                        color=color, marker=marker, label=method, markersize=4)
        ax.axhline(entry["baseline"], color="#777777", lw=0.8, ls=":", label="baseline")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("parameters kept (%)", fontsize=8)
        ax.set_ylabel(entry["metric"] + ("" if entry["higher"] else " (lower is better)"),
                      fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(swept):]:
        ax.axis("off")
    legend = {}                 # every method that appears in any panel, once
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
               fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def section(out: Path) -> list[str]:
    """SUMMARY.md lines: the Pareto plot and a table of every (workload, budget) point."""
    from .summary import _fmt, _table
    found = points(out)
    if not any(len(e["curves"].get("lumos s2", [])) >= 2 for e in found.values()):
        return []
    image = plot(out / "pareto.png", found)
    rows = []
    for title, entry in sorted(found.items()):
        by_budget: dict[float, dict[str, tuple]] = defaultdict(dict)
        for method, curve in entry["curves"].items():
            for kept, metric, budget in curve:
                by_budget[budget][method] = (kept, metric)
        for budget, cells in sorted(by_budget.items()):
            rows.append([title, f"{budget:g}"] + [
                f"{100 * cells[m][0]:.1f}% / {_fmt(cells[m][1], entry['metric'])}"
                if m in cells else "-" for m in METHODS])
    wins, total = pareto_wins(found)
    return ["## Pareto: metric against parameters kept (all budgets)", "",
            f"![pareto]({image})" if image else "(matplotlib not installed: no plot)", "",
            f"Cells: parameters kept / test metric. lumos S2 at least as good as every peer "
            f"that ran at the same budget: {wins} of {total} (workload, budget) points.", "",
            _table(["workload", "budget"] + METHODS, rows), ""]
