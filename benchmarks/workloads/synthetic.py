"""Synthetic: SciML-Bench ``synthetic_regression`` (paper Table II, FCs, math formula).

Proxy: ``x ~ N(0, 1)^64``, ``y = sum_{k<16} (x_k^2 + 15 sin^3 x_k)``; the other 48 inputs never
enter the formula, so they are ground-truth irrelevant. (The original uses 784 inputs, all of
them in the sum, and an MLP 784-3000x4.)
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .base import Data, Spec, tabular

SPEC = Spec(name="synthetic", title="Synthetic", proxy="SciML-Bench synthetic_regression formula, "
            "16 of 64 inputs used", task="regression", metric="r2", epochs=20, batch_size=512,
            lr=2e-3, budget=0.1, feature_cost=0.05, paper_model="FCs", bench_batch=8192, quick_epochs=3)

N_FEATURES, N_USED = 64, 16
SIZES = {"quick": (6000, 1000, 1000), "full": (100000, 10000, 10000)}


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_val + n_test, N_FEATURES))
    used = x[:, :N_USED]
    y = (used ** 2 + 15 * np.sin(used) ** 3).sum(1, keepdims=True)
    return tabular(x, y, n_val, n_test, seed, feature_names=[f"x{i}" for i in range(N_FEATURES)],
                   irrelevant=list(range(N_USED, N_FEATURES)), output_names=["y"])


def model(d: Data) -> nn.Module:
    return nn.Sequential(nn.Linear(d.n_features, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                         nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, 1))
