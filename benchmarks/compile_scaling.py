"""How ``lumos.compile`` and ``lumos.extract`` scale with model depth.

Builds plain conv nets of conv-BN-ReLU blocks (16 channels, every third block a
two-conv residual) with 20, 50, 100 and 150 conv layers, times ``compile`` and
``extract`` (median of ``--repeats`` runs; ``extract`` after random gates and
with its own exactness check), and writes ``benchmarks/results/compile_scaling.md``
and ``.json``. The verdict compares time per layer across depths and the
least-squares log-log growth exponent (1.0 = linear, 2.0 = quadratic).

Run::

    PYTHONPATH=. python benchmarks/compile_scaling.py [--depths 20 50 100 150] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import lumos_fx as lumos

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH = 16


class ConvBNReLU(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a = ConvBNReLU(c, c)
        self.b = ConvBNReLU(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class PlainConvNet(nn.Module):
    """``n_conv`` conv layers: a stem, then blocks; every third block is a residual pair."""

    def __init__(self, n_conv: int, width: int = WIDTH, n_out: int = 10):
        super().__init__()
        blocks, count, i = [ConvBNReLU(3, width)], 1, 0
        while count < n_conv:
            if i % 3 == 2 and n_conv - count >= 2:
                blocks.append(Residual(width))
                count += 2
            else:
                blocks.append(ConvBNReLU(width, width))
                count += 1
            i += 1
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, n_out)
        self.n_conv = count

    def forward(self, x):
        return self.fc(self.blocks(x).mean((2, 3)))


def _randomize_gates(gated, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            la = gate.log_alpha
            la.copy_((torch.rand(la.shape, generator=g) * 12 - 6).to(la.dtype))
            la[0] = 6.0


def measure(n_conv: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = PlainConvNet(n_conv).eval()
    assert model.n_conv == n_conv
    x = torch.randn(2, 3, 8, 8)
    compile_s, extract_s = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        gated = lumos.compile(model, example_inputs=(x,))
        compile_s.append(time.perf_counter() - t0)
        _randomize_gates(gated, seed=r)
        t0 = time.perf_counter()
        pruned = lumos.extract(gated)
        extract_s.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.parameters())
    kept = sum(p.numel() for p in pruned.parameters())
    return {
        "conv_layers": n_conv, "graph_nodes": len(model_graph_nodes(gated)),
        "gates": len(lumos.gates(gated)), "params": n_params, "params_after": kept,
        "compile_s": statistics.median(compile_s), "extract_s": statistics.median(extract_s),
        "compile_runs": compile_s, "extract_runs": extract_s,
    }


def model_graph_nodes(gated):
    return list(gated.graph.nodes)


def growth_exponent(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(time) against log(layers) over all depths."""
    xs = [math.log(r["conv_layers"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def verdict(exponent: float) -> str:
    if exponent < 1.15:
        return "about linear"
    if exponent < 1.5:
        return "mildly super-linear"
    if exponent < 1.8:
        return "clearly super-linear"
    return "about quadratic or worse"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 50, 100, 150])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for depth in args.depths:
        row = measure(depth, args.repeats)
        rows.append(row)
        print(f"{depth:4d} conv layers: compile {row['compile_s']:.3f}s  "
              f"extract {row['extract_s']:.3f}s", flush=True)
    summary = {}
    for key in ("compile_s", "extract_s"):
        exp = growth_exponent(rows, key)
        per_layer = [1e3 * r[key] / r["conv_layers"] for r in rows]
        summary[key] = {"exponent": exp, "verdict": verdict(exp),
                        "ms_per_layer": per_layer}
    result = {"rows": rows, "summary": summary, "repeats": args.repeats,
              "threads": args.threads, "torch": torch.__version__,
              "python": platform.python_version(), "machine": platform.machine()}

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile_scaling.json").write_text(json.dumps(result, indent=2))
    lines = ["# lumos_fx compile / extract scaling", "",
             f"Plain conv-BN-ReLU nets (width {WIDTH}, every third block a residual pair), input "
             f"(2, 3, 8, 8); median of {args.repeats} runs, {args.threads} thread(s), "
             f"torch {torch.__version__}. `extract` runs after random gates and includes its "
             "exactness check.", "",
             "| conv layers | graph nodes | gates | compile (s) | ms / layer | extract (s) | "
             "ms / layer |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['conv_layers']} | {r['graph_nodes']} | {r['gates']} | "
                     f"{r['compile_s']:.3f} | {1e3 * r['compile_s'] / r['conv_layers']:.1f} | "
                     f"{r['extract_s']:.3f} | {1e3 * r['extract_s'] / r['conv_layers']:.1f} |")
    lines.append("")
    for key, name in (("compile_s", "compile"), ("extract_s", "extract")):
        s = summary[key]
        lines.append(f"- **{name}**: log-log growth exponent {s['exponent']:.2f} over "
                     f"{args.depths[0]}–{args.depths[-1]} layers (1 = linear, 2 = quadratic): "
                     f"{s['verdict']}; ms per layer "
                     + " → ".join(f"{v:.1f}" for v in s["ms_per_layer"]) + ".")
    (RESULTS / "compile_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
