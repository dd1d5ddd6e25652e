"""The ``lumos-fx`` command line.

``lumos-fx demo`` trains, prunes, verifies and exports the built-in SciML
surrogate (see :mod:`lumos_fx.demo`) and prints the report; ``lumos-fx bench``
runs the benchmark suite (``benchmarks/``, same options as ``python -m
benchmarks``); ``lumos-fx version`` prints the version.

Example::

    $ lumos-fx demo --steps 1500 --out lumos_demo_out
    $ lumos-fx bench cfd --quick
    $ lumos-fx version
    lumos-fx 0.1.0
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .demo import DEFAULT_STEPS


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("lumos-fx")
    except Exception:
        import lumos_fx
        return getattr(lumos_fx, "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumos-fx",
        description="L0-gated feature selection and structured pruning on torch.fx (LUMOS).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo", help="train, prune, verify and export a SciML surrogate (well under a minute on CPU)",
        description="Train a baseline MLP on a synthetic flux surrogate with 20 named input "
                    "features (4 informative), compile it with lumos_fx, train with the L0 "
                    "penalty, extract the pruned model, check exactness, and export it with "
                    "torch.export.")
    demo.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                      help="training steps for the baseline and for the gated model "
                           f"(default {DEFAULT_STEPS})")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", default="lumos_demo_out", metavar="DIR",
                      help="directory for the exported pruned model (default lumos_demo_out)")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sub.add_parser(
        "bench", add_help=False,
        help="run the SciML benchmark suite (lumos-fx bench --help; needs the [bench] extra "
             "for peers and plots)")
    sub.add_parser("version", help="print the lumos-fx version")
    return parser


def _bench(argv: list[str]) -> int:
    try:
        from benchmarks.cli import main as bench_main
    except ImportError:
        print("lumos-fx bench: the benchmarks package is not installed; run it from a source "
              "checkout installed with pip install -e \".[bench]\"", file=sys.stderr)
        return 2
    return bench_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:          # the benchmark CLI parses its own options
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"lumos-fx {_version()}")
        return 0
    if args.steps < 1:
        print("lumos-fx demo: --steps must be at least 1", file=sys.stderr)
        return 2
    from .demo import run_demo
    text = run_demo(steps=args.steps, seed=args.seed, out_dir=args.out, device=args.device,
                    progress=not args.no_progress)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
