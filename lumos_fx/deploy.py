"""Deploy a pruned model: a ``torch.export`` program, optionally compiled ahead of time.

:func:`deploy` takes a gated model (it extracts it) or an extracted one and

1. exports it with ``torch.export`` with a dynamic batch dim (and dynamic node and
   edge counts for graph inputs: the defaults of :mod:`lumos_fx.capture`) and saves
   the program as ``<path>/model.pt2`` (``torch.export.save``);
2. with ``aot=True`` compiles that program with AOTInductor into the package
   ``<path>/model_aoti.pt2`` (needs a C++ compiler; load it with
   ``torch._inductor.aoti_load_package``);
3. loads what it wrote back from disk and checks it against the pruned model on the
   example inputs and on a batch of another size (``ExactnessError`` if it differs);
4. measures latency (``torch.utils.benchmark``: the best median of ``blocked_autorange``
   over 5 interleaved rounds) at batch 1 and at ``large_batch``: the original eager
   model when given, the pruned eager model and each artifact;
5. writes ``<path>/deploy.json`` with all of it.

Load the artifacts with plain PyTorch: ``torch.export.load(path).module()`` or
``lumos_fx.DeployedModel(path)`` (``torch._inductor.aoti_load_package(path)`` with
the call specs parsed once: at batch 1 the package's own callable spends more time
parsing them than computing); all take the model's full inputs.

Example::

    >>> import tempfile, torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(16, 4),))
    >>> result = lumos.deploy(gated, path=tempfile.mkdtemp(), measure=False)
    >>> result.program.name, max(result.max_abs_diff.values()) < 1e-5
    ('model.pt2', True)
    >>> torch.export.load(result.program).module()(torch.randn(3, 4)).shape
    torch.Size([3, 2])
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from .capture import batch_of_two, default_dynamic_shapes, explain
from .deployed import DeployedModel
from .errors import ExactnessError, InputError, TraceError
from .verify import relative_error

__all__ = ["Deployment", "deploy"]

PROGRAM, PACKAGE, SUMMARY = "model.pt2", "model_aoti.pt2", "deploy.json"


@dataclass
class Deployment:
    """What :func:`deploy` wrote, how closely it matches, and how fast it runs.

    ``max_abs_diff`` maps ``"<artifact>, batch <n>"`` to the largest absolute
    difference from the pruned model; ``latency_us`` maps a model name to
    ``{"batch <n>": microseconds}`` (empty when not measured).
    """

    directory: Path
    program: Path
    package: Path | None
    max_abs_diff: dict[str, float]
    latency_us: dict[str, dict[str, float]] = field(default_factory=dict)
    threads: int = 1
    kept_inputs: dict[str, list[int]] = field(default_factory=dict)

    def load(self):
        """The fastest artifact, loaded: the AOTInductor package (a :class:`DeployedModel`)
        if there is one, else the exported program's module."""
        if self.package is not None:
            return DeployedModel(self.package)
        return torch.export.load(str(self.program)).module()

    def speedup(self, model: str, baseline: str, batch: str) -> float | None:
        """``latency[baseline] / latency[model]`` at ``batch`` (e.g. ``"batch 1"``)."""
        a, b = self.latency_us.get(model, {}).get(batch), self.latency_us.get(baseline, {}).get(batch)
        return None if not a or not b else b / a

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "program": str(self.program),
                "package": None if self.package is None else str(self.package),
                "max_abs_diff": self.max_abs_diff, "latency_us": self.latency_us,
                "threads": self.threads, "kept_inputs": self.kept_inputs}

    def __str__(self) -> str:
        lines = [f"deployed to {self.directory}",
                 f"  exported program: {self.program.name}" + (
                     f"; AOTInductor package: {self.package.name}" if self.package else "")]
        lines += [f"  max |artifact - pruned| {name}: {diff:.3g}"
                  for name, diff in self.max_abs_diff.items()]
        if self.latency_us:
            batches = list(dict.fromkeys(b for row in self.latency_us.values() for b in row))
            width = max(len(name) for name in self.latency_us)
            lines.append(f"  latency, us ({self.threads} thread(s))".ljust(width + 6)
                         + "".join(f"{b:>20}" for b in batches))
            base = "original eager" if "original eager" in self.latency_us else "pruned eager"
            for name, row in self.latency_us.items():
                cells = []
                for b in batches:
                    value, ratio = row.get(b), self.speedup(name, base, b)
                    cells.append("n/a" if value is None else
                                 f"{value:.1f}" + (f" ({ratio:.2f}x)" if name != base and ratio else ""))
                lines.append(f"    {name:<{width}}  " + "".join(f"{c:>20}" for c in cells))
            lines.append(f"  (Nx = speed-up over {base})")
        return "\n".join(lines)


def _check(model, example_inputs, path, aot, original, large_batch, threads, min_run_time,
           inductor_configs):
    if not isinstance(model, nn.Module):
        raise InputError(f"lumos.deploy expects a gated or extracted nn.Module, got "
                         f"{type(model).__name__}")
    if original is not None and not isinstance(original, nn.Module):
        raise InputError(f"original must be the original nn.Module or None, got "
                         f"{type(original).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"path must be a directory path, got {path!r}")
    if Path(path).exists() and not Path(path).is_dir():
        raise InputError(f"path {str(path)!r} exists and is not a directory")
    if not isinstance(aot, bool):
        raise InputError(f"aot must be True or False, got {aot!r}")
    if inductor_configs is not None and (not isinstance(inductor_configs, dict) or not all(
            isinstance(k, str) for k in inductor_configs)):
        raise InputError("inductor_configs must be a dict of torch._inductor.config names to "
                         f"values, e.g. {{'max_autotune': True}}; got {inductor_configs!r}")
    if inductor_configs and not aot:
        raise InputError("inductor_configs apply to the AOTInductor compile: pass aot=True")
    if isinstance(large_batch, bool) or not isinstance(large_batch, int) or large_batch < 2:
        raise InputError(f"large_batch must be an int >= 2, got {large_batch!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise InputError(f"threads must be a positive int or None, got {threads!r}")
    if not isinstance(min_run_time, (int, float)) or not min_run_time > 0:
        raise InputError(f"min_run_time must be a positive number of seconds, got "
                         f"{min_run_time!r}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
        raise InputError("example_inputs must be a tuple of the model's positional inputs, "
                         f"got {type(example_inputs).__name__}")
    return None if example_inputs is None else tuple(example_inputs)


def _pruned_and_inputs(model: nn.Module, example_inputs):
    """The extracted model and example inputs (the gated model's, when not given)."""
    from .api import extract
    from .state import unwrap
    gated = unwrap(model)
    state = gated.__dict__.get("lumos_state")
    if state is None:
        if example_inputs is None:
            raise InputError("lumos.deploy needs example_inputs for an extracted model "
                             "(a gated model brings its own)")
        return model, example_inputs
    if example_inputs is None:
        example_inputs = state.example_inputs
    return extract(gated), example_inputs


def _rows(inputs: tuple, n: int) -> tuple | None:
    """The inputs (nested ones too) with ``n`` rows, taken cyclically from the example, or
    None when the tensor inputs share no batch dim (graph inputs: nodes and edges)."""
    tensors = [x for x in tree_leaves(inputs) if isinstance(x, torch.Tensor) and x.dim()]
    sizes = {x.shape[0] for x in tensors}
    if len(sizes) != 1:
        return None
    index = torch.arange(n, device=tensors[0].device) % sizes.pop()
    return tree_map(lambda x: x.index_select(0, index)
                    if isinstance(x, torch.Tensor) and x.dim() else x, inputs)


def _export(pruned: nn.Module, inputs: tuple, dynamic_shapes):
    export_inputs = inputs
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(inputs, {})[0]
        export_inputs = batch_of_two(inputs, {})[0]    # batch 1 would export as a constant
    try:
        return torch.export.export(pruned, export_inputs, dynamic_shapes=dynamic_shapes,
                                   strict=False)
    except Exception as err:
        raise TraceError(explain(pruned, err, False, export_inputs)) from err


def _compile_aot(program, package: Path, inductor_configs: dict | None) -> Path:
    compiler = os.environ.get("CXX") or next(
        (c for c in ("g++", "clang++", "c++") if shutil.which(c)), None)
    if compiler is None or shutil.which(compiler) is None:
        raise InputError("aot=True compiles C++ with AOTInductor and needs a C++ compiler "
                         "(g++ or clang++) on PATH; install one or deploy with aot=False")
    try:
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(package),
                                                        inductor_configs=inductor_configs)
    except Exception as err:
        if inductor_configs and isinstance(err, (AttributeError, KeyError, ValueError)):
            raise InputError(f"AOTInductor rejected inductor_configs={inductor_configs!r}: "
                             f"{err}") from err
        raise
    return Path(path)


def _max_abs_diff(expected, actual) -> tuple[float, float]:
    worst = 0.0
    for e, a in zip(tree_leaves(expected), tree_leaves(actual), strict=True):
        if isinstance(e, torch.Tensor):
            if e.shape != a.shape:
                return float("inf"), float("inf")
            worst = max(worst, (a.detach().double() - e.detach().double()).abs().max().item()
                        if e.numel() else 0.0)
    return worst, relative_error(expected, actual)


def _verify(pruned, artifacts: dict, input_sets: dict, rtol: float) -> dict[str, float]:
    diffs = {}
    with torch.no_grad():
        for label, inputs in input_sets.items():
            expected = pruned(*inputs)
            for name, run in artifacts.items():
                diffs[f"{name}, {label}"], rel = _max_abs_diff(expected, run(*inputs))
                if not rel <= rtol:
                    raise ExactnessError(
                        f"the {name} differs from the pruned model on the inputs of {label} "
                        f"by a relative error of {rel:.3g} (allowed {rtol:g})")
    return diffs


def _latency_us(models: dict, sizes: dict, threads: int, min_run_time: float,
                rounds: int = 5) -> dict[str, dict[str, float]]:
    """Median microseconds per call of each model at each input size: ``rounds``
    interleaved rounds (every model in turn), the best round's median, so a burst of
    load from other processes does not land on one model only."""
    from torch.utils.benchmark import Timer
    best: dict[str, dict[str, float]] = {name: {} for name in models}
    with torch.no_grad():
        for label, inputs in sizes.items():
            timers = {}
            for name, fn in models.items():
                fn(*inputs)                     # warm-up (first-call allocations, caches)
                timers[name] = Timer("fn(*inputs)", globals={"fn": fn, "inputs": inputs},
                                     num_threads=threads)
            for _ in range(rounds):
                for name, timer in timers.items():
                    median = 1e6 * timer.blocked_autorange(min_run_time=min_run_time / rounds).median
                    best[name][label] = min(best[name].get(label, float("inf")), median)
    return best


def deploy(model: nn.Module, example_inputs=None, path="lumos_deploy", *, aot: bool = False,
           original: nn.Module | None = None, dynamic_shapes=None, large_batch: int = 1024,
           threads: int | None = None, measure: bool = True,
           min_run_time: float = 0.2, inductor_configs: dict | None = None) -> Deployment:
    """Export (and with ``aot=True`` compile) the pruned model, check it, time it.

    Args:
        model: a gated model (``lumos.extract`` runs first; the model is not
            changed) or an extracted one.
        example_inputs: the model's positional inputs (one batch); a gated model's
            own example inputs by default.
        path: directory for ``model.pt2``, ``model_aoti.pt2`` and ``deploy.json``.
        aot: also compile with AOTInductor (a C++ compiler, and a minute or more).
        original: the unpruned model, to time it beside the pruned one (a copy
            is timed in eval mode).
        dynamic_shapes: ``torch.export`` dynamic shapes; by default dim 0 of every
            input (and every dim of integer inputs) is dynamic, as in ``compile``.
        large_batch: rows of the large-batch measurement (taken cyclically from
            the example inputs).
        threads: torch CPU threads while timing (default: the current setting).
        measure: time the models (``False``: export and verify only).
        min_run_time: seconds of timing per model and batch size (all rounds).
        inductor_configs: ``torch._inductor.config`` settings for the AOTInductor
            compile, e.g. ``{"max_autotune": True}`` (tunes the GEMMs at the example's
            batch size: fastest near it, can be slower far from it).
    """
    example_inputs = _check(model, example_inputs, path, aot, original, large_batch, threads,
                            min_run_time, inductor_configs)
    pruned, inputs = _pruned_and_inputs(model, example_inputs)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    program = _export(pruned, inputs, dynamic_shapes)
    torch.export.save(program, str(directory / PROGRAM))
    package = _compile_aot(program, directory / PACKAGE, inductor_configs) if aot else None
    artifacts = {"exported program": torch.export.load(str(directory / PROGRAM)).module()}
    if package is not None:
        artifacts["AOTInductor"] = DeployedModel(package)
    batch = next((x.shape[0] for x in tree_leaves(inputs)
                  if isinstance(x, torch.Tensor) and x.dim()), 0)
    other = _rows(inputs, 2 * batch + 3)
    input_sets = {f"batch {batch}": inputs} if other is not None else {"example inputs": inputs}
    if other is not None:
        input_sets[f"batch {2 * batch + 3}"] = other
    dtype = next((p.dtype for p in pruned.parameters() if p.is_floating_point()), torch.float32)
    diffs = _verify(pruned, artifacts, input_sets, rtol=max(1e-4, 20 * torch.finfo(dtype).eps))
    threads = threads or torch.get_num_threads()
    latency = {}
    if measure:
        sizes = {"batch 1": _rows(inputs, 1), f"batch {large_batch}": _rows(inputs, large_batch)}
        if sizes["batch 1"] is None:
            sizes = {"example inputs": inputs}
        models = {"original eager": None if original is None else copy.deepcopy(original).eval(),
                  "pruned eager": pruned, **artifacts}
        latency = _latency_us({k: v for k, v in models.items() if v is not None}, sizes,
                              threads, min_run_time)
    result = Deployment(directory, directory / PROGRAM, package, diffs, latency, threads,
                        {k: list(v) for k, v in getattr(pruned, "lumos_kept_inputs", {}).items()})
    (directory / SUMMARY).write_text(json.dumps(result.to_dict(), indent=1))
    return result
