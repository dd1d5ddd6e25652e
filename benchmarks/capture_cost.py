"""What capture costs: ``lumos.compile`` + ``lumos.extract`` next to one ``torch.export.export``.

For torchvision-style ResNet-50, DenseNet-121 and MobileNetV2 (``benchmarks/vision_models.py``)
at batch 2 x 3 x 96 x 96, times one ``torch.export.export`` of the eval-mode model (dynamic
batch), ``compile`` (two exports, train and eval, plus the passes and the eval-identity check)
and ``extract`` (after random gates, with its exactness check); best of ``--repeats`` runs after
one warm-up export. Writes ``benchmarks/results/capture_cost.md`` and ``.json``. Aim: compile +
extract within 4x one export.

Run::

    PYTHONPATH=. python benchmarks/capture_cost.py [--repeats 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tabulate import tabulate

import lumos_fx as lumos
from benchmarks.vision_models import MODELS

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _random_gates(gated, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            closed = torch.rand(gate.log_alpha.shape, generator=generator) < 0.3
            gate.log_alpha.masked_fill_(closed, -6.0)


def measure(name: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(2, 3, 96, 96)
    batch = {0: torch.export.Dim.AUTO}
    torch.export.export(model, (x,), dynamic_shapes=(batch,))          # warm-up
    export_s = min(_timed(lambda: torch.export.export(model, (x,), dynamic_shapes=(batch,)))[1]
                   for _ in range(repeats))
    compile_s, extract_s, error = [], [], None
    for _ in range(repeats):
        gated, seconds = _timed(lambda: lumos.compile(model, example_inputs=(x,)))
        compile_s.append(seconds)
        _random_gates(gated)
        pruned, seconds = _timed(lambda: lumos.extract(gated.eval()))
        extract_s.append(seconds)
        error = lumos.verify(gated, pruned, (x,))
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "export_s": export_s,
            "compile_s": min(compile_s), "extract_s": min(extract_s),
            "ratio": (min(compile_s) + min(extract_s)) / export_s,
            "pruned_params": sum(p.numel() for p in pruned.parameters()),
            "gates": len(lumos.gates(gated)), "exactness": error}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(name, args.repeats) for name in args.models]
    table = tabulate([[r["model"], f"{r['params']:,}", f"{r['export_s']:.2f}",
                       f"{r['compile_s']:.2f}", f"{r['extract_s']:.2f}", f"{r['ratio']:.2f}x",
                       r["gates"], f"{r['exactness']:.1e}"] for r in rows],
                     headers=["model", "params", "export s", "compile s", "extract s",
                              "(compile+extract)/export", "gates", "rel. error"])
    RESULTS.mkdir(exist_ok=True)
    header = (f"# Capture cost\n\n{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, batch 2x3x96x96, "
              f"best of {args.repeats}. Aim: compile + extract <= 4x one torch.export.export.\n\n")
    (RESULTS / "capture_cost.md").write_text(header + table + "\n")
    (RESULTS / "capture_cost.json").write_text(json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()
