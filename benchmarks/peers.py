"""Structured-pruning peers from Torch-Pruning (paper Table III), at lumos's size and budget.

Every peer starts from the trained baseline and gets the same fine-tuning budget as lumos S2
(``ft_epochs`` with gates + ``post_epochs`` after extraction):

* ``l1`` -- Li et al. 2017: one-shot removal of the filters/neurons with the smallest L1 norm
  (``MagnitudeImportance(p=1, group_reduction="first")``), then ``ft + post`` epochs fine-tuning;
* ``bn_slimming`` -- Liu et al. 2017 (network slimming): ``ft`` epochs with an L1 penalty on
  BatchNorm scales (``BNScalePruner.regularize``), prune by BN scale, ``post`` epochs fine-tuning.
  Needs BatchNorm layers; skipped otherwise;
* ``depgraph`` -- Fang et al. 2023: ``ft`` epochs of group-norm sparse training
  (``GroupNormPruner.regularize``), prune by group L2 norm, ``post`` epochs fine-tuning.

The channel pruning ratio (uniform over layers, output layer kept) is found by bisection so that
the pruned parameter count matches lumos's extracted model as closely as possible from below.
Torch-Pruning cannot remove input features, so it must get its reduction from hidden channels.
"""
from __future__ import annotations

import copy
import importlib.util
import time

import torch
from torch import nn

from .measure import count_flops, count_params
from .train import evaluate, fit
from .workloads.base import Data, Spec, as_args

PEERS = ("l1", "bn_slimming", "depgraph")


def _tp():
    import torch_pruning as tp
    return tp


def _output_layers(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The last Linear/Conv executed in a forward pass (its outputs are the model's)."""
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    with torch.no_grad():
        model.eval()(*x)
    for h in hooks:
        h.remove()
    return order[-1:]


def _make_pruner(method: str, model: nn.Module, x: tuple, ratio: float, options=None):
    """A Torch-Pruning pruner; ``options(model)`` gives the extra arguments a user would have to
    write for this model (``ignored_layers``, ``unwrapped_parameters``)."""
    tp = _tp()
    extra = dict(options(model)) if options is not None else {}
    after_step = extra.pop("after_step", None)
    common = dict(pruning_ratio=ratio, **extra)
    common["ignored_layers"] = _output_layers(model, x) + list(extra.get("ignored_layers", []))
    if method == "l1":
        imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first", normalizer=None)
        pruner = tp.pruner.MetaPruner(model, x, importance=imp, **common)
    elif method == "bn_slimming":
        pruner = tp.pruner.BNScalePruner(model, x, importance=tp.importance.BNScaleImportance(),
                                         reg=1e-4, **common)
    elif method == "depgraph":
        pruner = tp.pruner.GroupNormPruner(
            model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), reg=5e-4, **common)
    else:
        raise ValueError(method)
    return pruner, (lambda: after_step(model, pruner)) if after_step else (lambda: None)


def _prune(method: str, model: nn.Module, x: tuple, ratio: float, options=None):
    """Prune ``model`` in place at ``ratio`` (and apply the user's after-pruning patch)."""
    pruner, after = _make_pruner(method, model, x, ratio, options)
    pruner.step()
    after()


def prune_to(method: str, model: nn.Module, x: tuple, target_params: int,
             iters: int = 10, options=None) -> tuple[nn.Module, float]:
    """A pruned copy of ``model`` with at most ``target_params`` (closest from below)."""
    lo, hi = 0.0, 0.995
    best = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        trial = copy.deepcopy(model)
        _prune(method, trial, x, mid, options)
        n = count_params(trial)
        if n <= target_params:
            best, hi = (trial, mid), mid
        else:
            lo = mid
    if best is None:  # cannot reach the target: take the most aggressive ratio
        trial = copy.deepcopy(model)
        _prune(method, trial, x, hi, options)
        best = (trial, hi)
    return best


def run_peer(method: str, spec: Spec, baseline: nn.Module, data: Data, target_params: int,
             ft_epochs: float, post_epochs: float, device: str, seed: int, progress=None,
             options=None, iters: int = 10, teacher: nn.Module | None = None) -> dict:
    if importlib.util.find_spec("torch_pruning") is None:
        return {"skipped": "torch-pruning is not installed (pip install 'lumos-fx[bench]')"}
    if method == "bn_slimming" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                           for m in baseline.modules()):
        return {"skipped": "no BatchNorm layers: network slimming does not apply"}
    x = as_args(data.x_train[:8].to(device, torch.float32))
    model = copy.deepcopy(baseline).to(device)
    start = time.perf_counter()
    sparse, notes = {}, []
    if method == "l1":
        pruned, ratio = prune_to(method, model, x, target_params, iters, options)
        tune = fit(spec, pruned, data, ft_epochs + post_epochs, device=device, seed=seed,
                   progress=progress, desc=f"{method} ft", teacher=teacher)
    else:
        trainer, _ = _make_pruner(method, model, x, 0.5, options)
        try:
            sparse = fit(spec, model, data, ft_epochs, device=device, seed=seed,
                         progress=progress, after_backward=lambda m: trainer.regularize(m),
                         desc=f"{method} sparse", teacher=teacher)
        except (IndexError, RuntimeError) as exc:
            # torch-pruning 1.6 GroupNormPruner.regularize indexes ConvTranspose weights as
            # (out, in): fall back to plain fine-tuning before the (group-norm) pruning step
            notes.append(f"sparse training failed ({type(exc).__name__}: {exc}); "
                         "plain fine-tuning before pruning instead")
            model = copy.deepcopy(baseline).to(device)
            sparse = fit(spec, model, data, ft_epochs, device=device, seed=seed,
                         progress=progress, desc=f"{method} ft(no reg)", teacher=teacher)
        pruned, ratio = prune_to(method, model, x, target_params, iters, options)
        tune = fit(spec, pruned, data, post_epochs, device=device, seed=seed + 1,
                   progress=progress, desc=f"{method} ft", teacher=teacher)
    result = {
        "pruning_ratio": ratio, "params": count_params(pruned),
        "flops": count_flops(pruned, as_args(data.x_test[:1].to(device, torch.float32))),
        "metrics": evaluate(spec, pruned, data, device=device),
        "train_seconds": time.perf_counter() - start,
        "sparse_train_seconds": sparse.get("seconds", 0.0), "finetune_seconds": tune["seconds"],
        "reached_target": count_params(pruned) <= target_params, "notes": notes,
        # what a user had to write for Torch-Pruning on this model (lumos needs none of it)
        "user_options": sorted(options(copy.deepcopy(baseline)).keys()) if options else [],
    }
    result["metric"] = result["metrics"][spec.metric]
    result["model"] = pruned
    return result
