"""Per-step training time of a gated model against the original, in one process.

For each workload (an MLP surrogate 53-256-256-5 at batch 256 and at 512, the batch
the MLP workloads train with, and a small CNN on
3x32x32 at batch 64) every variant trains on the same batch with Adam:

* ``original``: the unmodified model;
* ``gated, no penalty``: ``lumos.compile(model)``, task loss only (gates + GateApply cost);
* ``gated + penalty``: fixed-lambda ``lumos.penalty`` added (the default mode);
* ``gated + budget``: ``budget=0.2``, the Lagrangian controller's penalty;
* ``penalty only``: forward+backward of ``lumos.penalty`` alone (budget mode);
* with ``--compiled`` (the default), each of the first four again with its loss function
  (forward, loss and penalty) under ``torch.compile``, the way a user removes Python and
  per-op overhead from a small model's step; those ratios are to the compiled original.

Repetitions are interleaved (each round times the same number of steps of every
variant, about ``--seconds`` of the original's, in rotating order) and the reported ratio is the median over rounds of
``time(variant) / time(original)`` within the same round, which cancels most of the
drift on a shared machine. Run:

    PYTHONPATH=. python -m benchmarks.overhead [--rounds 21] [--seconds 0.25] [--threads 1]

Writes ``benchmarks/results/overhead.{json,md}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos

RESULTS = Path(__file__).parent / "results"


def mlp(batch: int = 256):
    model = nn.Sequential(nn.Linear(53, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 5))
    return model, torch.randn(batch, 53), torch.randn(batch, 5), F.mse_loss


def mlp_512():
    """The CFD surrogate at the batch its workload trains with (``workloads/cfd.py``)."""
    return mlp(512)


def cnn():
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    return model, torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)), F.cross_entropy


COMPILED = ", torch.compile"


def variants(make, compiled: bool = True) -> dict:
    torch.manual_seed(0)
    model, x, y, loss_fn = make()

    def trainer(module, penalty: bool, opt, compile_loss: bool):
        def loss_of_step():
            loss = loss_fn(module(x), y)
            return loss + lumos.penalty(module) if penalty else loss
        loss_of = torch.compile(loss_of_step) if compile_loss else loss_of_step

        def step():
            opt.zero_grad(set_to_none=True)
            loss_of().backward()
            opt.step()
        return step

    out = {}
    for suffix in ["", COMPILED] if compiled else [""]:
        original = copy.deepcopy(model)
        out["original" + suffix] = trainer(original, False, torch.optim.Adam(
            original.parameters(), 1e-3), bool(suffix))
        for name, kwargs, penalty in [("gated, no penalty", {}, False),
                                      ("gated + penalty", {}, True),
                                      ("gated + budget", {"budget": 0.2}, True)]:
            gated = lumos.compile(model, example_inputs=(x,), **kwargs)
            out[name + suffix] = trainer(gated, penalty, torch.optim.Adam(
                lumos.param_groups(gated, 1e-3)), bool(suffix))
        if not suffix:
            alone = lumos.compile(model, example_inputs=(x,), budget=0.2)
            out["penalty only"] = lambda: lumos.penalty(alone).backward()
    return out


def measure(fns: dict, rounds: int, seconds: float) -> dict:
    names = list(fns)
    for fn in fns.values():     # warm up allocator and autograd caches (and compile)
        for _ in range(3):
            fn()
    start = time.perf_counter()
    fns["original"]()
    steps = max(1, round(seconds / (time.perf_counter() - start)))
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    out = {}
    for name, t in times.items():     # compiled variants against the compiled original
        against = "original" + COMPILED if name.endswith(COMPILED) else "original"
        base = times["original" if name == against else against]
        out[name] = {"median_ms": round(1e3 * statistics.median(t), 4),
                     "ratio": round(statistics.median(a / b for a, b in zip(t, base)), 4),
                     "steps_per_round": steps}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--seconds", type=float, default=0.25,
                    help="approximate time of one measurement (sets the steps per round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compiled", dest="compiled", action="store_false",
                    help="skip the torch.compile variants (they compile for a minute or two)")
    ap.add_argument("--keep-denormals", action="store_true",
                    help="do not call torch.set_flush_denormal(True)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Adam's moments of weights whose gradient is exactly 0 (closed channels) decay into
    # denormal floats after a few hundred steps, which are slow on x86 CPUs; flushing them
    # (for every variant alike) measures the gating, not that effect
    flush = not args.keep_denormals and torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", message="lumos budget")   # "penalty only" never trains
    load = os.getloadavg()
    results = {name: measure(variants(make, args.compiled), args.rounds, args.seconds)
               for name, make in [("mlp 53-256-256-5, batch 256", mlp),
                                  ("mlp 53-256-256-5, batch 512 (the MLP workloads' batch)",
                                   mlp_512), ("cnn 3x32x32, batch 64", cnn)]}
    env = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
           "seconds_per_measurement": args.seconds, "flush_denormal": bool(flush), "cpu": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load],
           "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    lines = ["# Training-step overhead of the gated model", "",
             f"torch {env['torch']}, {env['threads']} thread(s), {env['cores']} cores, "
             f"load average {env['loadavg_before'][0]} -> {env['loadavg_after'][0]} "
             f"(shared machine); {args.rounds} interleaved rounds of about {args.seconds} s "
             f"per variant; denormals flushed: {env['flush_denormal']}; "
             "ratio = median over rounds of time(variant) / time(original) in the same round "
             "(for a torch.compile variant: / time(original, torch.compile)).",
             ""]
    for workload, rows in results.items():
        lines += [f"## {workload}", "", "| variant | ms / step (median) | ratio to original |",
                  "|---|---|---|"]
        lines += [f"| {n} | {r['median_ms']:.3f} | {r['ratio']:.3f} |" for n, r in rows.items()]
        lines.append("")
    (RESULTS / "overhead.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
