"""Inference latency before and after pruning: original eager, pruned eager, deploy artifact.

For each workload (the MLP surrogates cfd, fluid, puremd, synthetic and the CNNs stemdl and
dms) the model is built at its initialisation, compiled with lumos, and its gates are **set,
not trained**: a fixed fraction (``--closed``, default 0.7) of every gated hidden channel
group is closed at random (seeded), and so are the workload's known-irrelevant input
features. Latency does not depend on the weight values, only on the widths, so this gives
the pruned shapes of a realistic run without its training time (the trained S2 runs of
``benchmarks/results/<workload>.json`` close 70-95% of the parameters). ``lumos.deploy``
then extracts the model, exports it (``torch.export``, dynamic batch), compiles it with
AOTInductor when a C++ compiler is present (``--no-aot`` skips it), checks both artifacts
against the pruned model and times, with ``torch.utils.benchmark`` (median of
``blocked_autorange``, best of 5 interleaved rounds) on ``--threads`` threads: the original
eager model, the pruned eager model, the exported program (run eagerly) and the AOTInductor
package, at batch 1 and at the workload's large batch. Run on a quiet machine:

    PYTHONPATH=. python -m benchmarks.latency [WORKLOAD ...] [--threads 1] [--seconds 1.0]
    lumos-fx bench latency cfd --seconds 0.2        # a quick check of one workload

Writes ``benchmarks/results/latency.{md,json}`` (``--out`` changes the folder).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lumos_fx as lumos
from lumos_fx.state import state_of, unwrap

from .workloads import load

RESULTS = Path(__file__).parent / "results"
MLPS = ["cfd", "fluid", "puremd", "synthetic"]
CNNS = ["stemdl", "dms"]
ROWS = ["original eager", "pruned eager", "exported program", "AOTInductor"]


def input_gates(gated) -> list:
    """The gates of the model's input features."""
    state = state_of(gated)
    bank = unwrap(gated).lumos_gates
    group_of, _ = state.plan.channels.atom_table()
    found = []
    for _, labels in state.plan.inputs.values():
        atoms = np.asarray(labels)[np.asarray(labels) >= 0]
        group = int(group_of[atoms[0]]) if len(atoms) else None
        if group in state.keys:
            found.append(bank[state.keys[group]])
    return found


def close_gates(gated, irrelevant, closed: float, seed: int) -> None:
    """Close ``closed`` of every gated hidden group (random, seeded) and the irrelevant inputs."""
    generator = torch.Generator().manual_seed(seed)
    inputs = input_gates(gated)
    with torch.no_grad():
        for _, gate in sorted(lumos.gates(gated).items()):
            if any(gate is g for g in inputs):
                if irrelevant:
                    gate.log_alpha[list(irrelevant)] = -8.0
                continue
            count = int(round(closed * gate.size))
            gate.log_alpha[torch.randperm(gate.size, generator=generator)[:count]] = -8.0


def compile_gated(spec, model, example):
    """``lumos.compile``; workloads with ``gate_inputs=False`` get no input gates."""
    names = inspect.signature(model.forward).parameters
    kwargs = {} if spec.gate_inputs else {"input_dims": {name: None for name in names}}
    return lumos.compile(model, example_inputs=example, **kwargs)


def run_workload(name: str, args, workdir: Path) -> dict:
    module = load(name)
    spec = module.SPEC
    torch.manual_seed(args.seed)
    data = module.data("quick", args.seed)
    model = module.model(data).eval()
    example = (data.x_test[:8].to(torch.float32),)
    gated = compile_gated(spec, model, example)
    close_gates(gated, data.irrelevant if spec.gate_inputs else None, args.closed, args.seed)
    pruned = lumos.extract(gated)
    aot = not args.no_aot and any(shutil.which(c) for c in ("g++", "clang++", "c++"))
    start = time.perf_counter()
    result = lumos.deploy(pruned, example, workdir / name, aot=aot, original=model,
                          large_batch=spec.bench_batch, threads=args.threads,
                          min_run_time=args.seconds)
    params = {"original": sum(p.numel() for p in model.parameters()),
              "pruned": sum(p.numel() for p in pruned.parameters())}
    return {"workload": name, "kind": "mlp" if name in MLPS else "cnn",
            "large_batch": spec.bench_batch, "params": params,
            "kept_inputs": {k: len(v) for k, v in pruned.lumos_kept_inputs.items()},
            "max_abs_diff": result.max_abs_diff, "latency_us": result.latency_us,
            "deploy_seconds": round(time.perf_counter() - start, 1), "aot": aot}


def _cell(row: dict, batch: str, base: float | None) -> str:
    value = row.get(batch)
    if value is None:
        return "n/a"
    return f"{value:,.1f}" + (f" ({base / value:.2f}x)" if base else "")


def markdown(records: list[dict], env: dict, closed: float) -> str:
    lines = ["# Inference latency: original vs pruned vs deploy artifact", "",
             f"Pruned models: gates **set, not trained**: {closed:.0%} of every gated hidden "
             "channel group closed at random (seeded) plus the workload's known-irrelevant "
             "inputs; weights at initialisation (latency depends on the widths only). "
             f"torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}, {env['cores']} "
             f"cores, load average {env['loadavg_before'][0]} -> {env['loadavg_after'][0]}; "
             "best median of torch.utils.benchmark blocked_autorange over 5 interleaved "
             f"rounds, {env['seconds']} s per cell. "
             "Artifact: AOTInductor package (`lumos.deploy(..., aot=True)`, default inductor "
             "settings), called through `lumos.DeployedModel`; the exported "
             "program (`torch.export.load(...).module()`) is run eagerly. (Nx) = speed-up over "
             "the original eager model.", ""]
    for rec in records:
        if "error" in rec:
            lines += [f"## {rec['workload']}: ERROR {rec['error']}", ""]
            continue
        lat, large = rec["latency_us"], f"batch {rec['large_batch']}"
        p = rec["params"]
        lines += [f"## {rec['workload']} ({rec['kind']}; params {p['original']:,} -> "
                  f"{p['pruned']:,}; kept inputs {rec['kept_inputs'] or 'all'})", "",
                  f"| model | batch 1, us | {large}, us |", "|---|---|---|"]
        base = lat.get("original eager", {})
        for name in (n for n in ROWS if n in lat):
            ref = {} if name == "original eager" else base
            lines.append(f"| {name} | {_cell(lat[name], 'batch 1', ref.get('batch 1'))} "
                         f"| {_cell(lat[name], large, ref.get(large))} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", default=MLPS + CNNS, metavar="WORKLOAD",
                    help=f"default: {' '.join(MLPS + CNNS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per model and batch")
    ap.add_argument("--closed", type=float, default=0.7, help="fraction of hidden channels closed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-aot", action="store_true", help="skip the AOTInductor compile")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    unknown = [w for w in args.workloads if w not in MLPS + CNNS]
    if unknown or not 0 <= args.closed < 1:
        ap.error(f"workloads are {', '.join(MLPS + CNNS)}; --closed in [0, 1)")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    records = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.workloads:
                try:
                    records.append(run_workload(name, args, Path(tmp)))
                except Exception as err:           # record it; the others still run
                    records.append({"workload": name, "error": f"{type(err).__name__}: {err}"})
                print(markdown(records[-1:], _env(args, load_before), args.closed)
                      .split("\n", 3)[-1], flush=True)
    finally:
        torch.set_num_threads(threads)
    env = _env(args, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps({"env": env, "results": records}, indent=1))
    (args.out / "latency.md").write_text(markdown(records, env, args.closed))
    print(f"wrote {args.out / 'latency.md'}")
    return 1 if any("error" in r for r in records) else 0


def _env(args, load_before) -> dict:
    return {"torch": torch.__version__, "threads": args.threads, "seconds": args.seconds,
            "closed": args.closed, "seed": args.seed,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


if __name__ == "__main__":
    raise SystemExit(main())
