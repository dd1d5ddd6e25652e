"""``SUMMARY.md`` and the PNG plots from the per-workload JSON records.

The Markdown mirrors the paper's Fig. 9 (latency, accuracy, parameters, FLOPs before/after) and
Table III (lumos vs Torch-Pruning peers at equal size), plus feature selection and the training
overhead of the gates. Plots need matplotlib; without it they are skipped with a note.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import pareto
from .summary_plots import plot_all

PEER_TITLES = {"l1": "L1 (Li et al.)", "bn_slimming": "BN-scale (Liu et al.)",
               "depgraph": "DepGraph group-norm"}


def load(out: Path) -> list[dict]:
    recs = []
    for p in sorted(out.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "workload" in rec:
            recs.append(rec)
    return recs


def _fmt(v, metric: str | None = None) -> str:
    if v is None:
        return "-"
    if metric == "mse":
        return f"{v:.3g}"
    if metric in ("r2", "acc", "pixel_acc"):
        return f"{v:.4f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _n(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _row_fig9(rec: dict, run: str) -> list[str] | None:
    lum = rec.get("lumos", {}).get(run, {})
    base = rec.get("baseline")
    if not base or "metric" not in lum:
        return None
    m = rec["metric"]
    cpu = rec.get("speed", {}).get("cpu", {})
    b, p = cpu.get("baseline", {}), cpu.get(f"lumos_{run}", {})
    mem_b = b.get("memory", {}).get("peak_bytes")
    mem_p = p.get("memory", {}).get("peak_bytes")
    ratio = lum["flop_ratio"]
    tsp = p.get("throughput_speedup")
    return [rec["title"], f"{m}", _fmt(base["metric"], m), _fmt(lum["metric"], m),
            f"{100 * lum['relative_metric_loss']:+.2f}%",
            f"{_n(base['params'])}→{_n(lum['params'])} ({100 * lum['param_reduction']:.1f}%)",
            f"{_n(base['flops'])}→{_n(lum['flops'])} ({100 * lum['flop_reduction']:.1f}%)",
            f"{p.get('latency_speedup', float('nan')):.2f}×",
            f"{tsp:.2f}× @{p.get('batch')}" if tsp else "-", f"{ratio:.2f}×",
            f"{tsp / ratio:.2f}" if tsp else "-",
            f"{_n(mem_b)}B→{_n(mem_p)}B" if mem_b and mem_p else "-"]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _means(recs: list[dict], run: str) -> dict:
    keys = {"param_reduction": [], "flop_reduction": [], "relative_metric_loss": [],
            "throughput_over_flop_ratio": [], "throughput_speedup": [], "latency_speedup": []}
    for rec in recs:
        lum = rec.get("lumos", {}).get(run, {})
        if "metric" not in lum:
            continue
        for k in ("param_reduction", "flop_reduction", "relative_metric_loss"):
            keys[k].append(lum[k])
        p = rec.get("speed", {}).get("cpu", {}).get(f"lumos_{run}", {})
        if p:
            keys["throughput_speedup"].append(p["throughput_speedup"])
            keys["latency_speedup"].append(p["latency_speedup"])
            keys["throughput_over_flop_ratio"].append(p["throughput_speedup"] / lum["flop_ratio"])
    out = {k: (float(np.mean(v)) if v else None) for k, v in keys.items()} | {
        "n": len(keys["param_reduction"])}
    losses = keys["relative_metric_loss"]
    out["median_relative_metric_loss"] = float(np.median(losses)) if losses else None
    bounded = [rec["lumos"][run]["relative_metric_loss"] for rec in recs
               if "metric" in rec.get("lumos", {}).get(run, {}) and rec["metric"] != "mse"]
    out["mean_loss_r2_acc"] = float(np.mean(bounded)) if bounded else None
    out["n_r2_acc"] = len(bounded)
    return out


def _peer_cells(rec: dict) -> tuple[list[str], str | None]:
    m = rec["metric"]
    cells, best, best_name = [], None, None
    s2 = rec.get("lumos", {}).get("s2", {})
    entries = [("lumos", s2)] + [(k, rec.get("peers", {}).get(k, {})) for k in PEER_TITLES]
    for name, r in entries:
        if "metric" in r:
            short = ("" if r.get("reached_target", True) else " †") + (
                " ‡" if r.get("user_options") else "")
            cells.append(f"{100 * r['param_reduction']:.1f}% / {_fmt(r['metric'], m)}{short}")
            better = best is None or (r["metric"] > best if rec["higher_is_better"]
                                      else r["metric"] < best)
            if better and r.get("reached_target", True):   # a larger model does not compete
                best, best_name = r["metric"], name
        elif "skipped" in r:
            cells.append("n/a")
        elif "error" in r:
            cells.append("error")
        else:
            cells.append("-")
    if best_name == "lumos" and not any("metric" in r for _, r in entries[1:]):
        best_name = "lumos (no peer ran)"     # not a win over anybody
    return cells, best_name


def write(out: Path, recs: list[dict] | None = None) -> Path:
    recs_all = load(out) if recs is None else recs
    recs = [r for r in recs_all if "baseline" in r]
    bad = [r for r in recs_all if "baseline" not in r]
    plots = plot_all(out, recs)
    modes = sorted({r.get("mode") for r in recs})
    lines = ["# lumos_fx benchmarks: offline proxy workloads", "",
             "Generated by `python -m benchmarks`; one JSON per workload next to this file. "
             "All data is generated offline from seeds (see `benchmarks/workloads/*.py` for each "
             "proxy); the paper's real-data numbers cannot be reproduced, so compare shapes, not "
             "values.", "", f"Mode: {', '.join(modes)}. "]
    envs = {(r['env'].get('torch'), r['env'].get('threads'), r['env'].get('device')) for r in recs}
    loads = [r["env"].get("loadavg_1m") for r in recs if r["env"].get("loadavg_1m") is not None]
    lines.append(f"Environment: {', '.join(f'torch {t}, {n} threads, {d}' for t, n, d in envs)}; "
                 f"1-min load average during the runs {min(loads, default=0):.1f}-"
                 f"{max(loads, default=0):.1f} on {recs[0]['env'].get('cpu_count') if recs else '?'}"
                 " CPUs (other jobs shared the CPUs: timings are noisy, about ±2×).")
    lines.append("")
    lines += _targets(recs)
    for run, label in (("s2", "S2: lumos fine-tuned from the trained baseline"),
                       ("s1", "S1: lumos trained from scratch")):
        rows = [r for r in (_row_fig9(rec, run) for rec in recs) if r]
        if not rows:
            continue
        lines += [f"## Fig. 9 — {label}", "",
                  _table(["workload", "metric", "baseline", "lumos", "rel. loss", "params",
                          "FLOPs/sample", "latency b1", "throughput", "FLOP ratio",
                          "speedup / FLOP ratio", "peak inference mem"], rows), ""]
        mean = _means(recs, run)
        if mean["n"]:
            lines.append(
                f"Mean over {mean['n']} workloads: parameter reduction "
                f"**{100 * mean['param_reduction']:.1f}%**, FLOP reduction "
                f"**{100 * mean['flop_reduction']:.1f}%**, relative metric loss "
                f"**{100 * mean['relative_metric_loss']:+.2f}%** (positive = worse), CPU "
                f"throughput speedup {mean['throughput_speedup']:.2f}× (latency b1 "
                f"{mean['latency_speedup']:.2f}×), throughput speedup / FLOP ratio "
                f"{mean['throughput_over_flop_ratio']:.2f}. Median relative metric loss "
                f"{100 * mean['median_relative_metric_loss']:+.2f}%; over the "
                f"{mean['n_r2_acc']} R²/accuracy workloads {100 * mean['mean_loss_r2_acc']:+.2f}% "
                "(relative MSE changes are large numbers on small MSEs and dominate the mean).")
            lines.append("")
    rows, wins, total = [], 0, 0
    for rec in recs:
        cells, best = _peer_cells(rec)
        if not cells or cells[0] == "-":
            continue
        n_peers = sum(c not in ("n/a", "error", "-") for c in cells[1:])
        if n_peers:
            total += 1
            wins += best == "lumos"
        rows.append([rec["title"], rec["metric"]] + cells + [best or "-"])
    if rows:
        lines += ["## Table III — lumos (S2) vs Torch-Pruning peers at equal size and fine-tune "
                  "budget", "",
                  "Cells: parameter reduction / test metric. Peers start from the same trained "
                  "baseline and get the same epochs (sparse training + fine-tuning) as lumos S2; "
                  "their channel ratio is bisected to land at or below lumos's parameter count.",
                  "", _table(["workload", "metric", "lumos"] + list(PEER_TITLES.values())
                             + ["best"], rows), "",
                  f"lumos best or tied-best on {wins} of {total} workloads with peers. "
                  "† = the peer could not reach lumos's size (e.g. BN-scale pruning cannot touch "
                  "layers without a BatchNorm, such as the FC layers that hold DMS's parameters); "
                  "n/a = no BatchNorm in the model; ‡ = Torch-Pruning needed hand-written, model-specific arguments (the `user_options` of the record: e.g. `num_heads` per q/k/v projection and a patch of the attention's `num_heads`/`head_dim` attributes after pruning), lumos none.", ""]
    rows = []
    for rec in recs:
        f = rec.get("features", {})
        for run in ("s1", "s2"):
            s = f.get(run)
            if not s:
                continue
            truth = "irrelevant" in s
            rows.append([rec["title"], run, f"{s['n_kept']}/{s['n_features']}",
                         str(len(s["irrelevant"])) if truth else "unknown",
                         f"{s.get('irrelevant_dropped', '-')}",
                         _fmt(s.get("drop_precision")), _fmt(s.get("drop_recall")),
                         _fmt(s.get("relevant_kept_fraction")),
                         ("yes" if s.get("all_irrelevant_dropped") else "no") if truth else "-"])
    if rows:
        lines += ["## Feature selection (Fig. 10)", "",
                  "Positives are the known-irrelevant inputs; lumos 'predicts' an input irrelevant "
                  "by closing its gate. Plots `<workload>_features.png` show Pearson |ρ| of every "
                  "input with every output next to the gate decisions.", "",
                  _table(["workload", "run", "kept", "irrelevant", "irrelevant dropped",
                          "drop precision", "drop recall", "relevant kept", "all irrelevant dropped"],
                         rows), ""]
    rows = []
    for rec in recs:
        t = rec.get("train_step")
        if t:
            rows.append([rec["title"], str(t["batch"]), f"{t['baseline_ms']:.2f}",
                         f"{t['gated_ms']:.2f}", f"{t['overhead']:.2f}×"])
    if rows:
        lines += ["## Training step time with and without gates (CPU)", "",
                  _table(["workload", "batch", "baseline ms", "gated ms", "overhead"], rows), ""]
    rows = []
    for rec in recs:
        for run in ("s1", "s2"):
            lum = rec.get("lumos", {}).get(run, {})
            if "error" in lum:
                rows.append([rec["title"], run, lum["error"].replace("|", "/")[:200]])
        for k, p in rec.get("peers", {}).items():
            if "error" in p:
                rows.append([rec["title"], k, p["error"].replace("|", "/")[:200]])
    if rows:
        lines += ["## Errors", "", _table(["workload", "stage", "error"], rows), ""]
    lines += pareto.section(out)
    notes = out / "NOTES.md"
    if notes.exists():  # hand-written analysis of this result set
        lines += [notes.read_text().rstrip(), ""]
    if bad:
        lines += ["## Skipped or failed workloads", ""] + [
            f"- **{r.get('title', r['workload'])}**: {r.get('skipped') or r.get('error')}"
            for r in bad] + [""]
    lines += ["## Proxies", ""] + [f"- **{r['title']}** ({r['paper_model']}): {r['proxy']}; "
                                   f"{r['data']['n_train']} train / {r['data']['n_test']} test; "
                                   f"budget {r['budget']}; epochs {r['epochs']}; wall "
                                   f"{r.get('wall_seconds', 0):.0f} s" for r in recs] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"- `{p}`" for p in plots] + [""]
    else:
        lines += ["(matplotlib not installed: no plots)", ""]
    path = out / "SUMMARY.md"
    path.write_text("\n".join(lines))
    return path


def _targets(recs: list[dict]) -> list[str]:
    """The project's targets, checked honestly on lumos S2 (the run the peers are matched to)."""
    mean = _means(recs, "s2")
    if not mean["n"]:
        return []
    speed_ok = speed_n = 0
    peer_wins = peer_n = 0
    irr_ok = irr_n = 0
    losses = []
    for rec in recs:
        lum = rec.get("lumos", {}).get("s2", {})
        p = rec.get("speed", {}).get("cpu", {}).get("lumos_s2")
        if "metric" in lum and p:
            speed_n += 1
            speed_ok += p["throughput_speedup"] >= 0.8 * lum["flop_ratio"]
        others = [r for r in rec.get("peers", {}).values()
                  if "metric" in r and r.get("reached_target", True)]
        if "metric" in lum and others:
            peer_n += 1
            sign = 1 if rec["higher_is_better"] else -1
            best = max(others, key=lambda r: sign * r["metric"])["metric"]
            peer_wins += sign * (lum["metric"] - best) >= 0
            if sign * (lum["metric"] - best) < 0:
                losses.append(f"{rec['title']} {100 * sign * (lum['metric'] - best) / abs(best):+.2f}%")
        sel = rec.get("features", {}).get("s2", {})
        if sel.get("irrelevant"):
            irr_n += 1
            irr_ok += bool(sel.get("all_irrelevant_dropped"))

    def mark(ok):
        return "met" if ok else "not met"
    return ["## Targets (lumos S2)", "",
            f"- mean parameter reduction ≥ 72% with ≤ 1% mean relative metric loss: "
            f"{100 * mean['param_reduction']:.1f}% at {100 * mean['relative_metric_loss']:+.2f}% — "
            f"{mark(mean['param_reduction'] >= 0.72 and mean['relative_metric_loss'] <= 0.01)} "
            f"(median loss {100 * mean['median_relative_metric_loss']:+.2f}%)",
            f"- large-batch CPU speedup ≥ 0.8 × FLOP ratio: {speed_ok} of {speed_n} workloads "
            f"(mean speedup / FLOP ratio {mean['throughput_over_flop_ratio']:.2f})",
            f"- metric ≥ every Torch-Pruning peer at equal size: {peer_wins} of {peer_n} workloads"
            + (f" (behind the best peer, relative: {', '.join(losses)})" if losses else ""),
            f"- every known-irrelevant input dropped: {irr_ok} of {irr_n} workloads with ground truth",
            ""]
