"""DMS: classify cubic vs tetragonal phase from diffuse-multiple-scattering-like line maps (CNN+FC).

Proxy (a kinematic line-geometry toy, not a DMS intensity simulation): Kossel-type lines drawn
where ``|k + g| = |k|`` for every reciprocal lattice vector g with ``|h|,|k|,|l| <= 2`` and
``|g| < 2|k|``, on a (theta, phi) map of beam directions (96 x 96). Class 1 is a tetragonal
distortion (c/a = 1.01-1.03, as WORKLOADS.md suggests), which splits lines; both classes get a
random lattice scale (+-1.5%), a small random misorientation (up to 1.5 degrees), line-width
jitter and noise. The model follows SciML-Bench DMSNet: conv 1->8 (k4), pool, BatchNorm,
conv 8->16, pool, FC ->512->256->2.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Data, Spec, cached, split

SPEC = Spec(name="dms", title="DMS", proxy="Kossel-line maps from a reciprocal lattice, cubic vs "
            "tetragonal (toy)", task="classification", metric="acc", epochs=8, batch_size=64,
            lr=1e-3, budget=0.1, gate_inputs=False, paper_model="CONVs+FCs", bench_batch=256,
            quick_epochs=2)

RES = 96
K_BEAM = 8.0
SIZES = {"quick": (400, 100, 100), "full": (1500, 300, 500)}


def _rotation(rng, max_deg):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(rng.uniform(0, max_deg))
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def _directions():
    theta = np.deg2rad(np.linspace(15, 65, RES))
    phi = np.deg2rad(np.linspace(5, 85, RES))
    t, p = np.meshgrid(theta, phi, indexing="ij")
    return np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)


DIRS = _directions().astype(np.float32)
HKL = np.array([(h, k, l) for h in range(-2, 3) for k in range(-2, 3) for l in range(-2, 3)
                if (h, k, l) != (0, 0, 0)], float)


def pattern(tetragonal: bool, rng) -> np.ndarray:
    a = rng.uniform(0.985, 1.015)
    c = a * (rng.uniform(1.01, 1.03) if tetragonal else 1.0)
    g = 2 * np.pi * HKL / np.array([a, a, c])
    g = g @ _rotation(rng, 1.5).T
    gn = np.linalg.norm(g, axis=1)
    keep = gn < 2 * K_BEAM
    g, gn = g[keep], gn[keep]
    # |k + g| = |k|  <=>  khat . ghat = -|g| / (2 k)
    d = (DIRS @ (g / gn[:, None]).T.astype(np.float32) + (gn / (2 * K_BEAM)).astype(np.float32))
    width = rng.uniform(0.006, 0.009)
    img = np.exp(-0.5 * (d / width) ** 2).sum(1).reshape(RES, RES)
    img = img / img.max()
    img += 0.15 * rng.random() * np.linspace(0, 1, RES)[None, :]  # smooth background gradient
    img += rng.normal(0, 0.08, img.shape)
    return img.astype(np.float32)


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    n = n_train + n_val + n_test

    def make():
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, n)
        x = np.stack([pattern(bool(t), rng) for t in y])[:, None].astype(np.float16)
        return {"x": x, "y": y}
    arrays = cached("dms", {"n": n, "res": RES, "seed": seed, "v": 3}, make)
    xt, yt, xv, yv, xs, ys = split(arrays["x"], arrays["y"], n_val, n_test, seed)

    def tx(a):
        return torch.as_tensor(a.astype(np.float32))

    def ty(a):
        return torch.as_tensor(a, dtype=torch.long)
    return Data(tx(xt), ty(yt), tx(xv), ty(yv), tx(xs), ty(ys), output_names=["cubic", "tetragonal"])


def model(d: Data) -> nn.Module:
    side = ((RES - 3) // 2 - 2) // 2
    return nn.Sequential(
        nn.Conv2d(1, 8, 4), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 2))
