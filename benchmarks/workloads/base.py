"""What a workload is: a seeded offline data generator, a model factory and its training recipe.

Every workload module in this package defines ``SPEC`` (a :class:`Spec`), ``data(size, seed)``
returning a :class:`Data`, and ``model(data)`` returning a fresh ``nn.Module``. ``size`` is
``"quick"`` (seconds, for CI and smoke runs) or ``"full"``.

Targets of regression workloads are standardised on the training split, so ``lam=1``/budget
penalties and the MSE numbers are on the same scale across workloads.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

CACHE = Path(__file__).resolve().parent.parent / ".cache"


@dataclass
class Spec:
    """Recipe of one workload.

    ``task``: ``regression`` (MSE loss, R^2), ``classification`` (CE, accuracy),
    ``segmentation`` (per-pixel BCE, pixel accuracy/IoU) or ``reconstruction`` (MSE).
    ``metric`` is the paper's headline metric for the workload (Fig. 9b).
    """

    name: str
    title: str
    proxy: str
    task: str
    metric: str
    epochs: int
    batch_size: int
    lr: float
    budget: float = 0.2
    requires: tuple[str, ...] = ()
    quick_epochs: int = 1
    gate_lr: float = 0.05
    quick_gate_lr: float = 1.0        # --quick has few steps: gates must move fast to close
    weight_decay: float = 0.0
    gate_inputs: bool = True          # gate the model's input features (dim 1)
    feature_cost: float = 0.0         # lumos.compile(feature_cost=): pressure on input features
    bench_batch: int = 4096           # "large batch" for throughput
    paper_model: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in ("mse",)


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: list[str] | None = None
    irrelevant: list[int] | None = None      # known-irrelevant input features (ground truth)
    output_names: list[str] | None = None
    raw_x: np.ndarray | None = None          # unstandardised inputs for the Pearson analysis
    raw_y: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # workload-specific test data (e.g. anomaly labels)

    @property
    def n_features(self) -> int:  # tensor workloads; graph ones name their features per input
        return self.x_train.shape[1]


def as_args(batch) -> tuple:
    """The model's positional arguments for one batch: a tensor, or a tuple of them (graphs)."""
    return tuple(batch) if isinstance(batch, tuple) else (batch,)


def missing(requires: tuple[str, ...]) -> list[str]:
    """Names of the optional modules of ``requires`` that are not importable."""
    return [m for m in requires if importlib.util.find_spec(m) is None]


def split(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int, seed: int):
    """Shuffle and cut into train/val/test."""
    order = np.random.default_rng(seed + 7).permutation(len(x))
    x, y = x[order], y[order]
    n_train = len(x) - n_val - n_test
    return (x[:n_train], y[:n_train], x[n_train:n_train + n_val], y[n_train:n_train + n_val],
            x[n_train + n_val:], y[n_train + n_val:])


def tabular(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int, seed: int, **kw) -> Data:
    """Split, standardise inputs and targets with train statistics, wrap as tensors."""
    xt, yt, xv, yv, xs, ys = split(x, y, n_val, n_test, seed)
    mx, sx = xt.mean(0), xt.std(0) + 1e-8
    my, sy = yt.mean(0), yt.std(0) + 1e-8

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    return Data(t((xt - mx) / sx), t((yt - my) / sy), t((xv - mx) / sx), t((yv - my) / sy),
                t((xs - mx) / sx), t((ys - my) / sy), raw_x=xt[:20000], raw_y=yt[:20000], **kw)


def cached(name: str, params: dict, make: Callable[[], dict]) -> dict:
    """``make()`` (a dict of numpy arrays), cached as ``benchmarks/.cache/<name>-<hash>.npz``.

    Set ``LUMOS_BENCH_NO_CACHE=1`` to regenerate.
    """
    key = hashlib.sha1(repr(sorted(params.items())).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}.npz"
    if path.exists() and not os.environ.get("LUMOS_BENCH_NO_CACHE"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    arrays = make()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays
