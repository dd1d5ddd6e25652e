"""Does ``budget=`` land in the simplest training loop a user writes?

An MLP 53-256-256-5 and a small CNN (two convs with BatchNorm, pooling, two FC
layers) are trained with a parameter budget (``budget=0.2``) and a FLOP budget
(``Budget(flops=0.25)``), default ``Budget`` settings, and a plain
``torch.optim.Adam(gated.parameters(), lr=...)``: gates in the same group as the
weights, no ``param_groups``, at lr 1e-3 and 3e-3, for 1,000 and 3,000 steps.
The extracted model is measured against the target (error in percentage points).

Run: ``PYTHONPATH=. python -m benchmarks.budget_accuracy [--steps 1000 3000]
[--lrs 1e-3 3e-3] [--workers 2] [--label after] [--legacy]``. Writes
``benchmarks/results/budget_accuracy.{md,json}`` (``--out`` to write elsewhere).
Synthetic data with a known structure (regression for the MLP, noisy teacher
labels for the CNN); every process uses one thread (landing does not depend on
load, only the seconds column does).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos

RESULTS = Path(__file__).parent / "results"


def mlp_task(n=20000):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(53, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 5))
    x = torch.randn(n, 53, generator=g)
    y = torch.tanh(x[:, :20] @ torch.randn(20, 5, generator=g) / 4) + 0.03 * (
        x[:, :10] ** 2) @ torch.randn(10, 5, generator=g)
    return model, x, (y - y.mean(0)) / y.std(0), 256, F.mse_loss


def cnn_task(n=8000):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    x = torch.randn(n, 3, 16, 16, generator=g)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                            nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():
        y = (teacher(x) + 0.5 * torch.randn(n, 10, generator=g)).argmax(1)
    return model, x, y, 64, F.cross_entropy


TASKS = {"mlp": mlp_task, "cnn": cnn_task}
BUDGETS = {"params": lambda: 0.2, "flops": lambda: lumos.Budget(flops=0.25)}
# the defaults before gate_step (issue 12): gates at the group's rate, a 1,000-step warm-up
LEGACY = {"params": lambda: lumos.Budget(params=0.2, warmup=1000, gate_lr=None),
          "flops": lambda: lumos.Budget(flops=0.25, warmup=1000, gate_lr=None)}


def run(config: tuple) -> dict:
    """One training run: ``(model, metric, lr, steps, legacy)`` -> the landing record."""
    name, metric, lr, steps, legacy = config
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, x, y, batch, loss_fn = TASKS[name]()
    budget = (LEGACY if legacy else BUDGETS)[metric]()
    gated = lumos.compile(model, example_inputs=(x[:batch],), budget=budget)
    opt = torch.optim.Adam(gated.parameters(), lr=lr)      # the simplest loop: one group
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = loss_fn(gated(x[idx]), y[idx]) + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = lumos.extract(gated)
    status = lumos.budget_status(gated, pruned)
    gated.eval()
    with torch.no_grad():
        task_loss = float(loss_fn(gated(x[-2000:]), y[-2000:]))
    return {"model": name, "metric": status.metric, "target": status.target, "lr": lr,
            "steps": steps, "achieved": round(status.achieved, 4),
            "error_pp": round(100 * status.error, 2), "expected": round(status.expected, 4),
            "task_loss": round(task_loss, 4), "warned": bool(caught),
            "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    ap.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--label", default="", help="a note for the table heading")
    ap.add_argument("--legacy", action="store_true",
                    help="the old defaults: Budget(warmup=1000, gate_lr=None)")
    ap.add_argument("--out", type=Path, default=RESULTS / "budget_accuracy")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    configs = [(m, metric, lr, steps, args.legacy) for m in args.models for metric in BUDGETS
               for lr in args.lrs for steps in args.steps]
    order = sorted(range(len(configs)), key=lambda i: -configs[i][3] * (configs[i][0] == "cnn"))
    rows = [None] * len(configs)
    with ProcessPoolExecutor(args.workers) as pool:       # longest runs first
        futures = {pool.submit(run, configs[i]): i for i in order}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            print(json.dumps(rows[futures[future]]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    settings = ("`Budget(warmup=1000, gate_lr=None)` (the defaults before `gate_step`)"
                if args.legacy else "default `Budget` settings")
    worst = max(abs(r["error_pp"]) for r in rows)
    lines = [f"# Budget accuracy after extraction{' — ' + args.label if args.label else ''}", "",
             "Plain `torch.optim.Adam(gated.parameters(), lr=lr)` (gates in the weights' group), "
             f"{settings}, one thread per run; achieved = counted on "
             "`lumos.extract(gated)`; warned = `extract` warned that the budget was missed; "
             "task loss on 2,000 held-in samples (eval gates). "
             f"Worst error: {worst:.2f} points.", "",
             "| model | metric | target | lr | steps | achieved | error (pp) | expected | "
             "task loss | warned | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['metric']} | {r['target']:.0%} | {r['lr']:g} | {r['steps']} | "
              f"{r['achieved']:.2%} | {r['error_pp']:+.2f} | {r['expected']:.2%} | "
              f"{r['task_loss']:.3f} | {'yes' if r['warned'] else 'no'} | {r['seconds']} |"
              for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
