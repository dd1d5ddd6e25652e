"""Training loops, losses and task metrics shared by every workload.

``fit`` trains any module (baseline, gated, extracted or peer-pruned) on a workload's data
with Adam and a cosine schedule. A gated model adds ``lumos.penalty`` (budget mode when the
library has it, else the fallback Lagrangian below); peers pass ``after_backward`` to apply
their sparsity regulariser (torch-pruning's ``pruner.regularize``).
"""
from __future__ import annotations

import inspect
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos

from .workloads.base import Data, Spec, as_args

HAS_BUDGET = hasattr(lumos, "Budget")
HAS_PARAM_GROUPS = hasattr(lumos, "param_groups")


def loss_fn(spec: Spec) -> Callable:
    if spec.task == "classification":
        return F.cross_entropy
    if spec.task == "segmentation":
        return F.binary_cross_entropy_with_logits
    return F.mse_loss


DISTILL, TEMPERATURE = 0.5, 2.0     # weight of the teacher's loss; softmax temperature


def distill_loss(spec: Spec, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How far the student's outputs are from the teacher's (Hinton et al. 2015 for
    classes: KL of the softened distributions, times T^2; the teacher's probabilities as
    soft labels for segmentation; mean squared error for regression)."""
    if spec.task == "classification":
        t = TEMPERATURE
        return F.kl_div(F.log_softmax(out / t, -1), F.log_softmax(target / t, -1),
                        log_target=True, reduction="batchmean") * t * t
    if spec.task == "segmentation":
        return F.binary_cross_entropy_with_logits(out, torch.sigmoid(target))
    return F.mse_loss(out, target)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1024, device: str = "cpu"):
    model.eval()
    outs = [model(*as_args(x[i:i + batch].to(device, torch.float32))).float().cpu()
            for i in range(0, len(x), batch)]
    return torch.cat(outs)


def roc_auc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U, tied scores share their mean rank)."""
    score, positive = score.double().flatten(), positive.bool().flatten()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse = torch.unique(score, return_inverse=True)
    ranks = torch.empty_like(score)
    ranks[score.argsort()] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    mean_rank = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=len(values)).double()
    return float((mean_rank[inverse][positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics(spec: Spec, pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Every metric of the task (the headline one is ``spec.metric``)."""
    if spec.task == "classification":
        out = {"acc": float((pred.argmax(1) == y).float().mean())}
        if pred.shape[1] == 2:     # binary: ROC-AUC of the positive class's logit margin
            out["rocauc"] = roc_auc(pred[:, 1] - pred[:, 0], y == 1)
        return out
    if spec.task == "segmentation":
        prob = torch.sigmoid(pred)
        hard = prob > 0.5
        truth = y > 0.5
        inter = (hard & truth).sum().item()
        union = (hard | truth).sum().item()
        return {"pixel_acc": float((hard == truth).float().mean()),
                "iou": inter / max(union, 1), "mse": float((prob - y).pow(2).mean())}
    err = (pred - y).pow(2)
    out = {"mse": float(err.mean())}
    flat_p, flat_y = pred.reshape(len(pred), -1), y.reshape(len(y), -1)
    if spec.task == "regression":
        ss_res = (flat_p - flat_y).pow(2).sum(0)
        ss_tot = (flat_y - flat_y.mean(0)).pow(2).sum(0).clamp_min(1e-12)
        r2 = 1 - ss_res / ss_tot
        out["r2"] = float(r2.mean())
        out["r2_per_output"] = [float(v) for v in r2]
    else:
        peak = flat_y.amax(1) - flat_y.amin(1)
        mse = (flat_p - flat_y).pow(2).mean(1).clamp_min(1e-12)
        out["psnr"] = float((10 * torch.log10(peak.pow(2) / mse)).mean())
    return out


def evaluate(spec: Spec, model: nn.Module, data: Data, split: str = "test",
             device: str = "cpu") -> dict:
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    batch = 8192 if x.dim() == 2 else 64
    out = metrics(spec, predict(model, x, batch, device), y)
    extra = data.extra.get("metric_fn")
    if extra is not None and split == "test":
        out.update(extra(model, device))
    return out


def relative_change(spec: Spec, base: float, new: float) -> float:
    """Relative metric *loss* (positive = worse), in fraction of the baseline."""
    if spec.higher_is_better:
        return (base - new) / max(abs(base), 1e-12)
    return (new - base) / max(abs(base), 1e-12)


class FallbackBudget:
    """CoFi-style Lagrangian on ``lumos.expected_cost`` for libraries without ``lumos.Budget``."""

    def __init__(self, gated: nn.Module, target: float, warmup: int, lr: float = 0.05):
        self.gated, self.target, self.warmup, self.lr = gated, target, max(warmup, 1), lr
        self.total = float(gated.lumos_cost.total_params)
        self.l1 = self.l2 = 0.0
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        frac = min(self.calls / self.warmup, 1.0)
        t = 1.0 - frac * (1.0 - self.target)
        s = lumos.expected_cost(self.gated)[0] / self.total
        e = s - t
        self.calls += 1
        with torch.no_grad():
            self.l1 += self.lr * float(e)
            self.l2 += self.lr * float(e) ** 2
        return self.l1 * e + self.l2 * e * e


def compile_gated(spec: Spec, model: nn.Module, data: Data, budget: float, steps: int,
                  controller_lr: float = 0.05, device: str = "cpu"):
    """``lumos.compile`` with the workload's budget; returns (gated, penalty callable, mode).

    The model and example inputs are put on ``device`` first, so that ``extract``'s own
    exactness check runs where the model lives.
    """
    model = model.to(device)
    example = as_args(data.x_train[:8].to(device, torch.float32))
    # gate_inputs=False: no input gate on any of the model's arguments (images whose few
    # channels are all needed; a closed one-channel input would make the model constant)
    arguments = inspect.signature(model.forward).parameters
    kwargs = {"feature_names": data.feature_names} if spec.gate_inputs else {
        "input_dims": {name: None for name in arguments}}
    if spec.gate_inputs and data.feature_names is None:
        kwargs = {}
    if spec.gate_inputs and spec.feature_cost:
        kwargs["feature_cost"] = spec.feature_cost
    warmup = max(int(0.4 * steps), 1)
    if HAS_BUDGET:
        gated = lumos.compile(model, example_inputs=example,
                              budget=lumos.Budget(params=budget, warmup=warmup, lr=controller_lr),
                              **kwargs)
        return gated, (lambda: lumos.penalty(gated)), "lumos.Budget(params=%g)" % budget
    gated = lumos.compile(model, example_inputs=example, **kwargs)
    return (gated, FallbackBudget(gated, budget, warmup, controller_lr),
            "bench Lagrangian (params=%g)" % budget)


def _optimizer(model: nn.Module, spec: Spec, lr: float, gated: bool, gate_lr: float):
    if gated and HAS_PARAM_GROUPS:
        groups = lumos.param_groups(model, lr=lr, gate_lr=gate_lr, weight_decay=spec.weight_decay)
    elif gated:
        gates = [p for n, p in model.named_parameters() if n.startswith("lumos_")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("lumos_")]
        groups = [{"params": rest, "lr": lr, "weight_decay": spec.weight_decay},
                  {"params": gates, "lr": gate_lr, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters()), "lr": lr,
                   "weight_decay": spec.weight_decay}]
    return torch.optim.Adam(groups)


def steps_per_epoch(spec: Spec, data: Data) -> int:
    return max(len(data.x_train) // spec.batch_size, 1)


def fit(spec: Spec, model: nn.Module, data: Data, epochs: float, *, lr: float | None = None,
        gate_lr: float | None = None, penalty: Callable | None = None, after_backward: Callable | None = None,
        device: str = "cpu", seed: int = 0, progress=None, desc: str = "",
        teacher: nn.Module | None = None) -> dict:
    """Train ``model`` in place for ``epochs`` (may be fractional); returns timing info.

    With a ``teacher`` (the trained dense model) the loss is
    ``(1 - DISTILL) * task + DISTILL * distill_loss(student, teacher)``."""
    lr = spec.lr if lr is None else lr
    gated = penalty is not None
    opt = _optimizer(model, spec, lr, gated, spec.gate_lr if gate_lr is None else gate_lr)
    per_epoch = steps_per_epoch(spec, data)
    total = max(int(round(epochs * per_epoch)), 1)
    # cosine on the weights only; the gates (last group when gated) keep a constant rate
    schedules = [lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))]
    schedules = schedules * (len(opt.param_groups) - 1) + (
        [lambda s: 1.0] if gated else schedules[:1])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedules)
    lossf = loss_fn(spec)
    g = torch.Generator().manual_seed(seed)
    model.train()
    if teacher is not None:
        teacher.eval()
    # the gated runs record how the kept fraction evolves, for the workload's HTML report
    monitor = (lumos.TrainingMonitor(model, every=max(total // 100, 1), progress=False)
               if gated and hasattr(lumos, "TrainingMonitor") else None)
    step, start = 0, time.perf_counter()
    last = {}
    while step < total:
        order = torch.randperm(len(data.x_train), generator=g)
        for i in range(0, len(order) - spec.batch_size + 1, spec.batch_size):
            idx = order[i:i + spec.batch_size]
            xb, yb = data.x_train[idx].to(device, torch.float32), data.y_train[idx].to(device)
            out = model(*as_args(xb))
            task = lossf(out, yb)
            loss = task
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(*as_args(xb))
                loss = (1 - DISTILL) * task + DISTILL * distill_loss(spec, out, target)
            loss = loss + penalty() if gated else loss
            opt.zero_grad(set_to_none=True)
            if not loss.requires_grad:     # a model pruned to a constant has nothing to train
                model.eval()
                return {"steps": step, "epochs": epochs, "seconds": time.perf_counter() - start,
                        "task_loss": task.item(), "note": "nothing trainable reaches the loss"}
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            opt.step()
            sched.step()
            step += 1
            if monitor is not None:
                monitor.step(loss=task)
            if progress is not None:
                progress.update(1)
                if step % 20 == 0:
                    progress.set_postfix_str(f"{desc} loss={task.item():.4f}", refresh=False)
            if step >= total:
                break
        last = {"task_loss": task.item()}
    seconds = time.perf_counter() - start
    model.eval()
    return {"steps": total, "epochs": epochs, "seconds": seconds, **last}
