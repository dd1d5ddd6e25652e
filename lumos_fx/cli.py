"""The ``lumos-fx`` command line.

``lumos-fx demo`` trains, prunes, verifies and exports the built-in SciML
surrogate (see :mod:`lumos_fx.demo`), prints the report and writes its HTML page;
``lumos-fx report CHECKPOINT`` prints the report of a gated model saved with
``torch.save(gated, path)`` and writes it as HTML (``--html``) and JSON
(``--json``); ``lumos-fx deploy CHECKPOINT --out DIR [--aot]`` writes the pruned
model as a ``torch.export`` program (and an AOTInductor package), verifies and
times it (see :mod:`lumos_fx.deploy`); ``lumos-fx bench`` runs the benchmark suite of a source checkout
(``benchmarks/`` next to ``lumos_fx/``, same options as ``python -m
benchmarks``); ``lumos-fx version`` prints the version.

Example::

    $ lumos-fx demo --steps 1500 --out lumos_demo_out
    $ lumos-fx report gated.pt --html report.html --json report.json
    $ lumos-fx deploy gated.pt --out deployed --aot
    $ lumos-fx bench cfd --quick
    $ lumos-fx version
    lumos-fx 0.1.0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
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

    rep = sub.add_parser(
        "report", help="report on a saved gated model: text, --html page, --json data",
        description="Load a gated model saved with torch.save(gated, path) (or a dict holding "
                    "one, e.g. {'model': gated, ...}), print its report, and write it as a "
                    "self-contained HTML page and/or JSON. The file is unpickled: load only "
                    "files you trust.")
    rep.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by torch.save")
    rep.add_argument("--html", metavar="OUT.html", help="write the HTML report here")
    rep.add_argument("--json", metavar="OUT.json", help="write the report as JSON here")
    rep.add_argument("--quiet", action="store_true", help="do not print the text report")

    dep = sub.add_parser(
        "deploy", help="export a saved gated model's pruned model (torch.export, --aot "
                       "AOTInductor), verify it and time it",
        description="Load a gated model saved with torch.save(gated, path) (or a dict holding "
                    "one; an 'original' entry holding the unpruned model is timed beside it), "
                    "extract it, write DIR/model.pt2 (torch.export, dynamic batch) and with "
                    "--aot DIR/model_aoti.pt2 (AOTInductor, needs g++), check both against the "
                    "pruned model and print latencies at batch 1 and --large-batch. The file "
                    "is unpickled: load only files you trust.")
    dep.add_argument("checkpoint", metavar="CHECKPOINT", help="file written by torch.save")
    dep.add_argument("--out", default="lumos_deploy", metavar="DIR",
                     help="output directory (default lumos_deploy)")
    dep.add_argument("--aot", action="store_true", help="also compile with AOTInductor")
    dep.add_argument("--large-batch", type=int, default=1024, metavar="N",
                     help="rows of the large-batch timing (default 1024)")
    dep.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch CPU threads while timing (default: torch's choice)")
    dep.add_argument("--no-measure", action="store_true", help="export and verify only")

    sub.add_parser(
        "bench", add_help=False,
        help="run the SciML benchmark suite (lumos-fx bench --help; needs the [bench] extra "
             "for peers and plots)")
    sub.add_parser("version", help="print the lumos-fx version")
    return parser


def _bench(argv: list[str]) -> int:
    """Run ``benchmarks/`` of the source checkout this package lives in (it is not installed)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "cli.py").is_file():
        print("lumos-fx bench: the benchmarks are not part of the installed package; run it from "
              "a source checkout (git clone, then pip install -e \".[bench]\")", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import benchmarks
    if Path(benchmarks.__file__).resolve().parent != root / "benchmarks":
        print(f"lumos-fx bench: another package named 'benchmarks' ({benchmarks.__file__}) "
              f"shadows {root / 'benchmarks'}", file=sys.stderr)
        return 2
    from benchmarks.cli import main as bench_main
    return bench_main(argv)


def _find_gated(obj):
    """The gated model in what ``torch.load`` returned, and a history stored beside it."""
    from torch import nn

    from .state import unwrap
    if isinstance(obj, nn.Module):
        return (obj, None) if unwrap(obj).__dict__.get("lumos_state") is not None else (None, None)
    if isinstance(obj, dict):
        for key in ("model", "gated", *obj):
            value = obj.get(key)
            gated = isinstance(value, nn.Module) and unwrap(value).__dict__.get("lumos_state")
            if gated is not None and gated is not False:
                return value, obj.get("history")
    return None, None


def _report(args) -> int:
    import torch

    from .errors import LumosError
    from .report import report
    path = Path(args.checkpoint)
    if not path.is_file():
        print(f"lumos-fx report: no such file: {path}", file=sys.stderr)
        return 2
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:            # not a torch.save file, or a class that is gone
        print(f"lumos-fx report: cannot load {path}: {err}", file=sys.stderr)
        return 2
    gated, history = _find_gated(obj)
    if gated is None:
        what = ("a state_dict" if isinstance(obj, dict) and obj
                and all(isinstance(v, torch.Tensor) for v in obj.values())
                else f"a {type(obj).__name__} without a gated model")
        print(f"lumos-fx report: {path} holds {what}; a report needs the whole gated model: "
              "save it with torch.save(gated, path) (or torch.save({'model': gated, ...}, path))",
              file=sys.stderr)
        return 2
    try:
        rep = report(gated, history=history)
    except LumosError as err:
        print(f"lumos-fx report: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(rep)
    if args.html:
        rep.to_html(args.html)
        print(f"wrote {args.html}")
    if args.json:
        rep.to_json(args.json)
        print(f"wrote {args.json}")
    return 0


def _deploy(args) -> int:
    import torch

    from .deploy import deploy
    from .errors import LumosError
    path = Path(args.checkpoint)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:            # missing, not a torch.save file, or a class that is gone
        print(f"lumos-fx deploy: cannot load {path}: {err}", file=sys.stderr)
        return 2
    gated, _ = _find_gated(obj)
    if gated is None:
        print(f"lumos-fx deploy: {path} holds no gated model; save it with "
              "torch.save(gated, path) (or torch.save({'model': gated, ...}, path))",
              file=sys.stderr)
        return 2
    original = obj.get("original") if isinstance(obj, dict) else None
    try:
        result = deploy(gated, path=args.out, aot=args.aot, original=original,
                        large_batch=args.large_batch, threads=args.threads,
                        measure=not args.no_measure)
    except LumosError as err:
        print(f"lumos-fx deploy: {err}", file=sys.stderr)
        return 2
    print(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:          # the benchmark CLI parses its own options
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"lumos-fx {_version()}")
        return 0
    if args.command == "report":
        return _report(args)
    if args.command == "deploy":
        return _deploy(args)
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
