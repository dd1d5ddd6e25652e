"""Command line: ``python -m benchmarks WORKLOAD|all [--quick] [--device cpu|cuda] [--budget F]
[--out DIR]`` (also ``lumos-fx bench ...`` through :func:`main`); ``python -m benchmarks
latency [WORKLOAD ...]`` writes the latency table (see :mod:`benchmarks.latency`).

Writes ``<out>/<workload>.json``, ``<out>/SUMMARY.md`` and PNG plots (when matplotlib is
installed). A workload whose optional dependency is missing is skipped with a message; one that
fails is recorded with its error and the others still run (exit status 1 then).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    from .workloads import ALL, PRIORITY
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run lumos_fx on offline proxies of the paper's SciML workloads; writes "
                    "<out>/<workload>.json, SUMMARY.md and PNG plots.")
    p.add_argument("workloads", nargs="+", metavar="WORKLOAD",
                   help=f"one or more of {', '.join(ALL)}, 'all', or p1-p4 "
                        f"(p1 = {', '.join(PRIORITY[1])}; p4 = {', '.join(PRIORITY[4])})")
    p.add_argument("--quick", action="store_true",
                   help="tiny data, 1-3 epochs: a smoke run of every stage")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where to train; CPU timings are always taken, CUDA ones too with cuda")
    p.add_argument("--budget", type=float, default=None,
                   help="fraction of parameters to keep (default: per workload)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {RESULTS}, or results/quick with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    p.add_argument("--no-peers", action="store_true", help="skip the Torch-Pruning peers")
    p.add_argument("--distill", action="store_true",
                   help="S2 and the peers also learn from the trained baseline's outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _names(args) -> list[str]:
    from .workloads import ALL, PRIORITY
    names = []
    for w in args:
        w = w.lower().replace("-", "_")
        if w == "all":
            names += list(ALL)
        elif w in ("p1", "p2", "p3", "p4"):
            names += PRIORITY[int(w[1])]
        elif w in ALL:
            names.append(w)
        else:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(ALL)}, all, p1-p4")
    return list(dict.fromkeys(names))


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _bar_factory(disabled: bool):
    from tqdm.auto import tqdm

    def make(total, name):
        return tqdm(total=total, desc=f"{name:>10}", unit="step", leave=False, disable=disabled,
                    dynamic_ncols=True)
    return make


def _feature_plot(out: Path, rec: dict, spec_title: str):
    from . import features
    f = rec.get("features", {})
    if "pearson_abs" not in f:
        return
    import numpy as np
    decisions = {run: f[run]["kept"] for run in ("s1", "s2") if run in f}
    if not decisions:
        return
    name = features.plot(out / f"{rec['workload']}_features.png", spec_title, f["names"],
                         f.get("outputs") or [], np.asarray(f["pearson_abs"]), decisions,
                         f.get("irrelevant"))
    if name:
        rec.setdefault("plots", []).append(name)


def run_one(name: str, args, out: Path) -> dict:
    from . import runner
    from .workloads import load
    from .workloads.base import missing
    try:
        module = load(name)
    except ImportError as exc:
        return {"workload": name, "title": name, "skipped": f"cannot import: {exc}"}
    absent = missing(module.SPEC.requires)
    if absent:
        return {"workload": name, "title": module.SPEC.title,
                "skipped": f"optional dependency missing: {', '.join(absent)} "
                           f"(pip install 'lumos-fx[bench]')"}
    rec = runner.run(module, quick=args.quick, device=args.device, budget=args.budget,
                     seed=args.seed, bar_factory=_bar_factory(args.no_progress),
                     skip_peers=args.no_peers, distill=args.distill)
    _feature_plot(out, rec, module.SPEC.title)
    _html_report(out, rec, rec.pop("_gated_s2", None))
    return rec


def _html_report(out: Path, rec: dict, gated):
    """``<workload>_report.html`` and ``.json``: lumos's report of the S2 model (with its
    training history): every group's kept width (heads per layer, FFN, stream), features."""
    if gated is None or not hasattr(gated, "lumos_state"):
        return
    import lumos_fx as lumos
    try:
        report = lumos.report(gated.eval())
        report.to_html(out / f"{rec['workload']}_report.html")
        report.to_json(out / f"{rec['workload']}_report.json")     # widths per group, as data
    except Exception as exc:  # the page is a by-product: record why it is missing
        rec["report_error"] = f"{type(exc).__name__}: {exc}"
        return
    rec.setdefault("plots", []).append(f"{rec['workload']}_report.html")


def _line(rec: dict) -> str:
    if "skipped" in rec:
        return f"{rec['workload']}: SKIPPED ({rec['skipped']})"
    if "error" in rec:
        return f"{rec['workload']}: ERROR {rec['error']}"
    s2 = rec.get("lumos", {}).get("s2", {})
    b = rec["baseline"]
    if "metric" not in s2:
        return f"{rec['workload']}: baseline {rec['metric']}={b['metric']:.4f}; lumos S2 failed"
    sp = rec["speed"]["cpu"].get("lumos_s2", {})
    return (f"{rec['workload']}: {rec['metric']} {b['metric']:.4f} -> {s2['metric']:.4f}, params "
            f"-{100 * s2['param_reduction']:.1f}%, FLOPs -{100 * s2['flop_reduction']:.1f}%, "
            f"throughput x{sp.get('throughput_speedup', float('nan')):.2f} "
            f"(FLOP ratio x{s2['flop_ratio']:.2f}), {rec['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["latency"]:        # the latency table has its own options
        from .latency import main as latency_main
        return latency_main(argv[1:])
    args = _parser().parse_args(argv)
    names = _names(args.workloads)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, names)
    finally:
        torch.set_num_threads(threads)


def _run(args, names: list[str]) -> int:
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    from . import summary
    failed = False
    start = time.perf_counter()
    outer = tqdm(names, desc="workloads", unit="wl", disable=args.no_progress, dynamic_ncols=True)
    for name in outer:
        outer.set_postfix_str(name)
        try:
            rec = run_one(name, args, out)
        except Exception as exc:  # keep going; the record says what broke
            rec = {"workload": name, "title": name, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()}
        failed |= "error" in rec
        (out / f"{name}.json").write_text(json.dumps(_clean(rec), indent=1, default=_json_default))
        tqdm.write(_line(rec))
    outer.close()
    path = summary.write(out)
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
