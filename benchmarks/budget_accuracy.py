"""Does ``budget=`` land? Train an MLP and a small CNN with ``budget=0.2`` (params) and
``budget=Budget(flops=0.25)``, default controller settings, then extract and measure.

Run: ``PYTHONPATH=. python -m benchmarks.budget_accuracy [--steps 2000] [--threads 1]``.
Writes ``benchmarks/results/budget_accuracy.{md,json}``. Each run: Adam over
``lumos.param_groups(gated, lr=1e-3)`` (default gate lr), synthetic data with a known
structure (regression for the MLP, noisy teacher labels for the CNN).
"""
from __future__ import annotations

import argparse
import json
import time
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


def run(task, budget, steps: int) -> dict:
    torch.manual_seed(0)
    model, x, y, batch, loss_fn = task()
    gated = lumos.compile(model, example_inputs=(x[:batch],), budget=budget)
    opt = torch.optim.Adam(lumos.param_groups(gated, lr=1e-3))
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = loss_fn(gated(x[idx]), y[idx]) + lumos.penalty(gated)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruned = lumos.extract(gated)
    status = lumos.budget_status(gated, pruned)
    return {"model": task.__name__.replace("_task", ""), "metric": status.metric,
            "target": status.target, "achieved": round(status.achieved, 4),
            "error_pp": round(100 * status.error, 2), "expected": round(status.expected, 4),
            "steps": steps, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run(task, budget, args.steps) for task in (mlp_task, cnn_task)
            for budget in (0.2, lumos.Budget(flops=0.25))]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "budget_accuracy.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Budget accuracy after extraction", "",
             f"Default `Budget` settings (warm-up 1000 controller steps), {args.steps} training "
             "steps, Adam over `lumos.param_groups(gated, lr=1e-3)`; achieved = counted on "
             "`lumos.extract(gated)`.", "",
             "| model | metric | target | achieved | error (pp) | expected | time (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['metric']} | {r['target']:.0%} | {r['achieved']:.2%} | "
              f"{r['error_pp']:+.2f} | {r['expected']:.2%} | {r['seconds']} |" for r in rows]
    (RESULTS / "budget_accuracy.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
