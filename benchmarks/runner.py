"""Run one workload end to end and return its result record (what ``<workload>.json`` holds).

Stages (epochs ``E`` from the workload's spec; ``ft = E/2`` and ``post = E/5`` rounded up):

1. baseline: the model trained normally for ``E`` epochs;
2. lumos S1: the same architecture and initialisation compiled with gates and trained from
   scratch for ``E`` epochs to the parameter budget, extracted, fine-tuned ``post`` epochs;
3. lumos S2: the trained baseline compiled and fine-tuned with gates for half of ``ft + post``
   epochs, extracted, fine-tuned the other half, all at the spec's learning rate (what the
   peers fine-tune with);
4. peers (Torch-Pruning) from the trained baseline at S2's parameter count with ``ft + post``
   epochs in total;
5. measurements: params, FLOPs (``FlopCounterMode``, batch 1), latency at batch 1, throughput at
   a large batch, peak inference memory, training-step time with and without gates, feature
   selection against the known-irrelevant inputs.
"""
from __future__ import annotations

import copy
import math
import time
import traceback

import numpy as np
import torch

import lumos_fx as lumos

from . import features, measure, peers
from .train import (compile_gated, evaluate, fit, loss_fn, relative_change,
                    steps_per_epoch)
from .workloads.base import Data, Spec, as_args

POST_FRACTION, FT_FRACTION = 0.2, 0.5
# S2's learning rates (gated phase, fine-tune after extraction) as fractions of the spec's, and
# its share of the ``ft + post`` epochs spent with gates. At half the rate and 10 of 14 epochs
# gated, CFD ended at R^2 0.752 (DepGraph 0.790); at the peers' rate, 7 + 7, at 0.799.
FT_LR, POST_LR, S2_GATED_SHARE = 1.0, 1.0, 0.5
# > 0: S2 starts its gates from the trained weights' magnitudes (lumos.init_gates_from_magnitude
# with this spread). Measured on CFD (budget 0.1, 7 + 7 epochs): R^2 0.801 with spread 3
# against 0.793 without; on STEM-DL 0.426 against 0.410 (both noisy).
MAGNITUDE_SPREAD = 3.0


def _epochs(spec: Spec, quick: bool):
    e = spec.quick_epochs if quick else spec.epochs
    if quick:
        return e, 1, 0.5
    return e, max(1, math.ceil(FT_FRACTION * e)), max(1, math.ceil(POST_FRACTION * e))


def _seed(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)


# > 0: before extraction, lumos.select_features (with this many standard errors of confidence)
# closes the input features whose permutation does not raise the validation loss significantly
# nor, at that confidence, by 5% of the rise from permuting them all. A trained baseline (S2)
# learns to use noise inputs to fit its training set, and the training loss defends them.
FEATURE_TEST_Z = 2.0


def _held_out(spec: Spec, data: Data, device: str) -> list:
    """The validation split as ``(inputs, target)`` batches (never used for training)."""
    n, size = len(data.x_val), spec.batch_size
    return [(as_args(data.x_val[torch.arange(i, min(i + size, n))].to(device, torch.float32)),
             data.y_val[i:i + size].to(device)) for i in range(0, n - 1, size)]


def _per_sample_loss(spec: Spec):
    task = loss_fn(spec)
    return lambda out, target: task(out, target, reduction="none")


DENSE_START = 0.3    # S1: fraction of its epochs trained before the penalty starts


def _lumos_run(name, spec, data, start_model, epochs, post, budget, device, seed, bar,
               quick, teacher=None) -> dict:
    dense = DENSE_START * epochs if name == "s1" else 0.0
    steps = max(int(round((epochs - dense) * steps_per_epoch(spec, data))), 1)
    gated, penalty, mode = compile_gated(spec, start_model, data, budget, steps,
                                         controller_lr=0.2 if quick else 0.05, device=device)
    gated.to(device)
    if name == "s2" and MAGNITUDE_SPREAD:
        lumos.init_gates_from_magnitude(gated, spread=MAGNITUDE_SPREAD)
    lr = spec.lr if name == "s1" else spec.lr * FT_LR
    # a gate travels ~5 units of log_alpha to close; with few steps (small CNN data sets) it
    # needs a higher rate than the default to get there after the budget warm-up
    gate_lr = spec.quick_gate_lr if quick else max(spec.gate_lr, min(0.5, 15.0 / steps))
    if dense:   # from scratch: learn the task before the budget starts closing gates
        fit(spec, gated, data, dense, lr=lr, device=device, seed=seed + 5, gate_lr=gate_lr,
            progress=bar, desc=f"lumos {name} dense start")
    train = fit(spec, gated, data, epochs - dense, lr=lr, penalty=penalty, device=device,
                seed=seed, gate_lr=gate_lr, progress=bar, desc=f"lumos {name}", teacher=teacher)
    out = {"budget_mode": mode, "gated_train_seconds": train["seconds"], "gated_epochs": epochs,
           "gate_lr": gate_lr, "gated_steps": steps}
    out["gated_metrics"] = evaluate(spec, gated, data, device=device)
    if spec.gate_inputs and FEATURE_TEST_Z:
        selection = lumos.select_features(gated, _held_out(spec, data, device), _per_sample_loss(spec),
                                          z=FEATURE_TEST_Z, seed=seed)
        out["feature_test"] = selection.to_dict()
    gated.eval()
    try:
        # a short run can close more than the budget asks: keep that capacity for the fine-tune
        pruned = lumos.extract(gated, fill_budget=True)
    except Exception as exc:  # a library bug: record it, keep the benchmark going
        out["error"] = f"extract failed: {type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=6)
        return out
    try:
        trained = lumos.budget_status(gated)      # what training alone reached
        filled = lumos.budget_status(gated, pruned)
        out["budget_status"] = {"target": filled.target, "achieved": filled.achieved,
                                "achieved_by_training": trained.achieved}
    except Exception:  # status is informative only
        pass
    x_check = as_args(data.x_test[:64].to(device, torch.float32))
    out["exactness_rel_error"] = lumos.verify(gated, pruned, x_check, rtol=1e-3)
    out["kept_inputs"] = {k: [int(i) for i in v] for k, v in pruned.lumos_kept_inputs.items()}
    out["extracted_metrics"] = evaluate(spec, pruned, data, device=device)
    tune = fit(spec, pruned, data, post, lr=spec.lr * POST_LR, device=device, seed=seed + 1,
               progress=bar, desc=f"lumos {name} ft", teacher=teacher)
    out["finetune_seconds"] = tune["seconds"]
    out["post_epochs"] = post
    out["metrics"] = evaluate(spec, pruned, data, device=device)
    out["metric"] = out["metrics"][spec.metric]
    out["params"] = measure.count_params(pruned)
    out["flops"] = measure.count_flops(pruned, as_args(data.x_test[:1].to(device, torch.float32)))
    out["gated_model"] = gated
    out["model"] = pruned
    return out


def _arch(model) -> list[str]:
    """``name: weight shape`` of every Linear/Conv layer (what the pruned widths are)."""
    from torch import nn
    return [f"{n}: {tuple(m.weight.shape)}" for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def _speed(models: dict, spec: Spec, data: Data, device: str, quick: bool) -> dict:
    x1 = data.x_test[:1]
    big = min(spec.bench_batch, len(data.x_test)) if quick else spec.bench_batch
    reps = -(-big // len(data.x_test))
    xb = data.x_test.repeat(reps, *([1] * (data.x_test.dim() - 1)))[:big]
    secs, rounds, reps = ((0.02, 0.05), 1, 2) if quick else ((0.2, 0.4), 4, 5)
    out = {}
    for dev in ["cpu"] + (["cuda"] if device == "cuda" else []):
        placed = {name: copy.deepcopy(m).to(dev).eval() for name, m in models.items()}
        rows = {name: {"latency_b1_ms": float("inf"), "throughput_sps": 0.0, "batch": big}
                for name in placed}
        # interleave the models over several rounds and keep each one's best round, so a
        # burst of load from other processes does not land on one model only
        for _ in range(rounds):
            for name, m in placed.items():
                row = rows[name]
                row["latency_b1_ms"] = min(row["latency_b1_ms"],
                                           measure.latency(m, x1, dev, secs[0], reps))
                row["throughput_sps"] = max(row["throughput_sps"],
                                            measure.throughput(m, xb, dev, secs[1], reps))
        if dev == device:
            for name, m in placed.items():
                rows[name]["memory"] = measure.peak_memory(m, xb, dev)
        out[dev] = rows
    return out


def _train_step(spec, baseline, data, device, quick) -> dict:
    xb = data.x_train[:spec.batch_size].float()
    yb = data.y_train[:spec.batch_size]
    plain = copy.deepcopy(baseline).to(device)
    gated, penalty, _ = compile_gated(spec, copy.deepcopy(baseline), data, 0.5, 100,
                                      device=device)
    gated.to(device)
    ms = measure.train_step_ms({"baseline": (plain, None), "gated": (gated, penalty)}, xb, yb,
                               loss_fn(spec), steps=3 if quick else 12, device=device)
    return {"batch": spec.batch_size, "baseline_ms": ms["baseline"], "gated_ms": ms["gated"],
            "overhead": ms["gated"] / ms["baseline"]}


def run(module, *, quick: bool, device: str = "cpu", budget: float | None = None,
        seed: int = 0, bar_factory=None, skip_peers: bool = False, distill: bool = False) -> dict:
    """Run the workload ``module`` (see ``workloads/base.py``); returns its result record.

    ``distill``: S2 and every peer learn from the trained baseline's outputs as well as the
    labels (``train.distill_loss``), in all their epochs; S1 has no trained model to learn from."""
    spec: Spec = module.SPEC
    budget = spec.budget if budget is None else budget
    epochs, ft, post = _epochs(spec, quick)
    s2_gated, s2_post = S2_GATED_SHARE * (ft + post), (1 - S2_GATED_SHARE) * (ft + post)
    size = "quick" if quick else "full"
    t0 = time.perf_counter()
    _seed(seed)
    data: Data = module.data(size, seed)
    gen_seconds = time.perf_counter() - t0
    rec = {"workload": spec.name, "title": spec.title, "proxy": spec.proxy,
           "paper_model": spec.paper_model, "task": spec.task, "metric": spec.metric,
           "higher_is_better": spec.higher_is_better, "mode": size, "budget": budget,
           "distill": distill,
           "epochs": {"baseline": epochs, "s1_gated": epochs, "s2_gated": s2_gated,
                      "s2_post": s2_post, "post": post, "peers_sparse": ft},
           "data": {"n_train": len(data.x_train), "n_val": len(data.x_val),
                    "n_test": len(data.x_test), "input_shape": list(data.x_train.shape[1:]),
                    "gen_seconds": gen_seconds, "notes": data.notes},
           "env": measure.environment(device)}
    per_epoch = steps_per_epoch(spec, data)
    total_steps = int(per_epoch * (2 * epochs + ft + 2 * post + 3 * (ft + post)))
    bar = bar_factory(total_steps, spec.name) if bar_factory else None
    try:
        # 1. baseline
        _seed(seed)
        init = module.model(data)
        baseline = copy.deepcopy(init).to(device)
        b_train = fit(spec, baseline, data, epochs, device=device, seed=seed, progress=bar,
                      desc="baseline")
        b_metrics = evaluate(spec, baseline, data, device=device)
        x1 = as_args(data.x_test[:1].to(device, torch.float32))
        rec["baseline"] = {"metric": b_metrics[spec.metric], "metrics": b_metrics,
                           "params": measure.count_params(baseline),
                           "flops": measure.count_flops(baseline, x1),
                           "train_seconds": b_train["seconds"], "epochs": epochs}
        teacher = copy.deepcopy(baseline).eval() if distill else None
        # 2-3. lumos S1 (from scratch) and S2 (from the trained baseline)
        runs = {"s1": _lumos_run("s1", spec, data, copy.deepcopy(init), epochs, post, budget,
                                 device, seed + 10, bar, quick),
                "s2": _lumos_run("s2", spec, data, copy.deepcopy(baseline).cpu(), s2_gated,
                                 s2_post, budget, device, seed + 20, bar, quick, teacher=teacher)}
        base = rec["baseline"]
        rec["lumos"] = {}
        for name, r in runs.items():
            clean = {k: v for k, v in r.items() if k not in ("model", "gated_model")}
            if "metric" in r:
                clean["param_reduction"] = 1 - r["params"] / base["params"]
                clean["flop_reduction"] = 1 - r["flops"] / base["flops"]
                clean["flop_ratio"] = base["flops"] / max(r["flops"], 1)
                clean["relative_metric_loss"] = relative_change(spec, base["metric"], r["metric"])
            rec["lumos"][name] = clean
        # feature selection
        rec["features"] = _features(spec, data, runs)
        # 4. peers at S2's size
        rec["peers"] = {}
        s2 = runs["s2"]
        peer_models = {}
        if not skip_peers and "params" in s2:
            for method in peers.PEERS:
                try:
                    r = peers.run_peer(method, spec, baseline.cpu(), data, s2["params"], ft, post,
                                       device, seed + 30, progress=bar,
                                       options=getattr(module, "peer_options", None),
                                       iters=6 if quick else 10, teacher=teacher)
                except Exception as exc:
                    first_line = str(exc).splitlines()[0] if str(exc) else ""
                    r = {"error": f"{type(exc).__name__}: {first_line[:300]}",
                         "traceback": traceback.format_exc(limit=6)}
                if "model" in r:
                    peer_models[method] = r.pop("model")
                    r["param_reduction"] = 1 - r["params"] / base["params"]
                    r["flop_reduction"] = 1 - r["flops"] / base["flops"]
                    r["relative_metric_loss"] = relative_change(spec, base["metric"], r["metric"])
                rec["peers"][method] = r
                baseline.to(device)
        # 5. speed, memory, training-step overhead
        models = {"baseline": baseline}
        models.update({f"lumos_{k}": r["model"] for k, r in runs.items() if "model" in r})
        models.update({f"peer_{k}": m for k, m in peer_models.items()})
        rec["architectures"] = {name: _arch(m) for name, m in models.items()}
        rec["speed"] = _speed(models, spec, data, device, quick)
        for dev, rows in rec["speed"].items():
            b = rows["baseline"]
            for name, row in rows.items():
                row["latency_speedup"] = b["latency_b1_ms"] / row["latency_b1_ms"]
                row["throughput_speedup"] = row["throughput_sps"] / b["throughput_sps"]
        rec["train_step"] = _train_step(spec, baseline.cpu(), data, device, quick)
        rec["env"]["loadavg_1m_end"] = measure.environment(device).get("loadavg_1m")
    finally:
        if bar is not None:
            bar.close()
    rec["wall_seconds"] = time.perf_counter() - t0
    rec["_gated_s2"] = runs["s2"].get("gated_model")   # for the HTML report; not in the JSON
    return rec


def _flat_features(data: Data) -> tuple[list[str], list[int] | None, dict[str, int]]:
    """Names and irrelevant indices of every gated input feature in one list.

    A model with several gated inputs (node and edge features of a graph) names them per input;
    they are listed input after input as ``input:feature``, with each input's offset.
    """
    names, irrelevant = data.feature_names, data.irrelevant
    if not isinstance(names, dict):
        return names, irrelevant, {}
    flat, flat_irrelevant, offsets = [], [], {}
    for inp, feats in names.items():
        offsets[inp] = len(flat)
        flat += [f"{inp}:{f}" for f in feats]
        flat_irrelevant += [offsets[inp] + i for i in (irrelevant or {}).get(inp, [])]
    return flat, flat_irrelevant if irrelevant is not None else None, offsets


def _features(spec: Spec, data: Data, runs: dict) -> dict:
    if not spec.gate_inputs or data.feature_names is None:
        return {"skipped": "input features not gated for this workload"}
    names, irrelevant, offsets = _flat_features(data)
    out = {"names": names, "irrelevant": irrelevant, "outputs": data.output_names}
    if data.raw_x is not None and data.raw_y is not None:
        out["pearson_abs"] = features.pearson_abs(data.raw_x, data.raw_y).round(4).tolist()
    for name, r in runs.items():
        kept = r.get("kept_inputs")
        if not kept:
            continue
        if offsets:
            idx = [offsets[inp] + i for inp, ids in kept.items() if inp in offsets for i in ids]
        else:
            (idx,) = list(kept.values())[:1]
        out[name] = features.selection_scores(idx, len(names), irrelevant)
    return out
