"""The PNG plots of ``SUMMARY.md``: per-workload before/after bars and the Fig. 9 overview.

Plots need matplotlib (the ``[bench]`` extra); without it :func:`plot_all` returns no names and
the summary says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _bars(plt, path: Path, rec: dict) -> str | None:
    cpu = rec.get("speed", {}).get("cpu", {})
    if not cpu:
        return None
    names = list(cpu)
    params, flops = [], []
    for n in names:
        if n == "baseline":
            params.append(rec["baseline"]["params"]), flops.append(rec["baseline"]["flops"])
        elif n.startswith("lumos_"):
            r = rec["lumos"][n[6:]]
            params.append(r["params"]), flops.append(r["flops"])
        else:
            r = rec["peers"][n[5:]]
            params.append(r["params"]), flops.append(r["flops"])
    panels = [("parameters", params, True), ("FLOPs / sample", flops, True),
              ("latency b1 (ms)", [cpu[n]["latency_b1_ms"] for n in names], False),
              (f"throughput (samples/s) @{cpu[names[0]]['batch']}",
               [cpu[n]["throughput_sps"] for n in names], False)]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    colors = ["#777777" if n == "baseline" else "#1f77b4" if n.startswith("lumos") else "#ff7f0e"
              for n in names]
    for ax, (title, vals, log) in zip(axes, panels):
        ax.bar(range(len(names)), vals, color=colors)
        ax.set_xticks(range(len(names)), [n.replace("lumos_", "lumos ").replace("peer_", "")
                                          for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_yscale("log")
    fig.suptitle(f"{rec['title']}: before/after (CPU; timings noisy)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _fig9(plt, path: Path, recs: list[dict]) -> str | None:
    recs = [r for r in recs if "metric" in r.get("lumos", {}).get("s2", {})]
    if not recs:
        return None
    titles = [r["title"] for r in recs]
    x = np.arange(len(recs))
    cpu = [r.get("speed", {}).get("cpu", {}) for r in recs]
    panels = [
        ("(a) CPU speedup (throughput / latency b1)",
         [c.get("lumos_s2", {}).get("throughput_speedup", np.nan) for c in cpu],
         [c.get("lumos_s2", {}).get("latency_speedup", np.nan) for c in cpu], False),
        ("(b) metric: baseline vs lumos", [r["baseline"]["metric"] for r in recs],
         [r["lumos"]["s2"]["metric"] for r in recs], False),
        ("(c) parameters before/after", [r["baseline"]["params"] for r in recs],
         [r["lumos"]["s2"]["params"] for r in recs], True),
        ("(d) FLOPs before/after", [r["baseline"]["flops"] for r in recs],
         [r["lumos"]["s2"]["flops"] for r in recs], True)]
    fig, axes = plt.subplots(2, 2, figsize=(13, 7))
    for ax, (title, a, b, log) in zip(axes.flat, panels):
        ax.bar(x - 0.2, a, 0.4, label="throughput" if title.startswith("(a)") else "baseline",
               color="#777777")
        ax.bar(x + 0.2, b, 0.4, label="latency b1" if title.startswith("(a)") else "lumos",
               color="#1f77b4")
        ax.set_xticks(x, titles, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        if log:
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_all(out: Path, recs: list[dict]) -> list[str]:
    plt = _plt()
    if plt is None:
        return []
    names = []
    for rec in recs:
        n = _bars(plt, out / f"{rec['workload']}_bars.png", rec)
        if n:
            names.append(n)
        if (out / f"{rec['workload']}_features.png").exists():
            names.append(f"{rec['workload']}_features.png")
    n = _fig9(plt, out / "fig9_summary.png", recs)
    if n:
        names.append(n)
    return names
