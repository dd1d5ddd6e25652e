"""STEM-DL: classify the space group of a crystal from its convergent-beam diffraction pattern (VGG).

Proxy (numpy kinematic model, no abTEM): 8 prototypes with distinct space groups -- Cu fcc (225),
W bcc (229), Si diamond (227), GaAs zincblende (216), Mg hcp (194), ZnO wurtzite (186), CsCl (221),
TiO2 rutile (136). For a random zone axis from {001, 011, 111, 100, 110}, the zero-order Laue zone
reflections g (g . uvw = 0) become disks of radius set by the convergence angle (8-14 mrad at
200 kV) with kinematic intensity ``|F(g)|^2`` (atomic form factor ``~Z^0.7 exp(-0.4 s^2)``),
a thickness (40-100 A) pendellosung modulation, a random in-plane rotation, a random lattice
strain of +-1% and Poisson noise; 48 x 48 over +-35 mrad. Headline metric: accuracy.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .base import Data, Spec, cached, split

SPEC = Spec(name="stemdl", title="STEM-DL", proxy="numpy kinematic CBED of 8 space-group "
            "prototypes, random zone axis/thickness, 48^2", task="classification", metric="acc",
            epochs=6, batch_size=64, lr=1e-3, budget=0.2, gate_inputs=False, paper_model="VGG",
            bench_batch=256, quick_epochs=2)

RES = 48
LAMBDA = 0.0251  # A at 200 kV
MAX_ANGLE = 0.035
SIZES = {"quick": (400, 100, 100), "full": (1600, 300, 500)}
ZONES = [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 0, 0), (1, 1, 0)]


def _fcc(z, shift=(0, 0, 0)):
    base = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]) + np.array(shift)
    return [(z, p) for p in base % 1.0]


U = 0.305
PROTOTYPES = {  # name: (lattice a, b, c, gamma_deg, atoms [(Z, frac)])
    "Cu fcc (225)": ((3.61, 3.61, 3.61, 90), _fcc(29)),
    "W bcc (229)": ((3.16, 3.16, 3.16, 90), [(74, (0, 0, 0)), (74, (.5, .5, .5))]),
    "Si diamond (227)": ((5.43, 5.43, 5.43, 90), _fcc(14) + _fcc(14, (.25, .25, .25))),
    "GaAs zincblende (216)": ((5.65, 5.65, 5.65, 90), _fcc(31) + _fcc(33, (.25, .25, .25))),
    "Mg hcp (194)": ((3.21, 3.21, 5.21, 120), [(12, (1 / 3, 2 / 3, .25)), (12, (2 / 3, 1 / 3, .75))]),
    "ZnO wurtzite (186)": ((3.25, 3.25, 5.21, 120),
                           [(30, (1 / 3, 2 / 3, 0)), (30, (2 / 3, 1 / 3, .5)),
                            (8, (1 / 3, 2 / 3, .382)), (8, (2 / 3, 1 / 3, .882))]),
    "CsCl (221)": ((4.12, 4.12, 4.12, 90), [(55, (0, 0, 0)), (17, (.5, .5, .5))]),
    "TiO2 rutile (136)": ((4.59, 4.59, 2.96, 90),
                          [(22, (0, 0, 0)), (22, (.5, .5, .5)), (8, (U, U, 0)),
                           (8, (1 - U, 1 - U, 0)), (8, (.5 + U, .5 - U, .5)),
                           (8, (.5 - U, .5 + U, .5))]),
}
CLASSES = list(PROTOTYPES)


def _lattice(a, b, c, gamma):
    g = np.deg2rad(gamma)
    return np.array([[a, 0, 0], [b * np.cos(g), b * np.sin(g), 0], [0, 0, c]])


@lru_cache(maxsize=None)
def spots(cls: int, zone: int):
    """2-D positions (1/A) and kinematic intensities of the ZOLZ reflections."""
    (a, b, c, gamma), atoms = PROTOTYPES[CLASSES[cls]]
    real = _lattice(a, b, c, gamma)
    recip = np.linalg.inv(real).T  # rows a*, b*, c* (no 2 pi: s = |g| in 1/A)
    uvw = np.array(ZONES[zone], float)
    axis = uvw @ real
    axis /= np.linalg.norm(axis)
    r = np.arange(-8, 9)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[(hkl @ uvw) == 0]
    g = hkl @ recip
    kmax = MAX_ANGLE / LAMBDA * 1.1
    keep = np.linalg.norm(g, axis=1) < kmax
    hkl, g = hkl[keep], g[keep]
    s = np.linalg.norm(g, axis=1)
    f = np.zeros(len(hkl), complex)
    for z, frac in atoms:
        f += z ** 0.7 * np.exp(-0.4 * s ** 2) * np.exp(2j * np.pi * hkl @ np.array(frac))
    inten = np.abs(f) ** 2
    e1 = np.cross(axis, [0, 0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    pos = np.stack([g @ e1, g @ e2], 1)
    ok = inten > 1e-6 * inten.max()
    return pos[ok], inten[ok] / inten.max(), s[ok]


GRID = (np.arange(RES) + 0.5) / RES * 2 * MAX_ANGLE - MAX_ANGLE


def pattern(cls: int, rng) -> np.ndarray:
    pos, inten, s = spots(cls, int(rng.integers(len(ZONES))))
    t = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    ang = (pos @ rot.T) * LAMBDA * rng.uniform(0.99, 1.01)  # scattering angle (rad)
    radius = rng.uniform(0.008, 0.014)
    thick = rng.uniform(40, 100)
    inten = inten * (0.6 + 0.4 * np.sin(np.pi * thick * s * rng.uniform(0.02, 0.04)) ** 2)
    inten[s == 0] = 1.0
    d2 = (GRID[None, :, None] - ang[:, 0, None, None]) ** 2 + (GRID[None, None, :] - ang[:, 1, None, None]) ** 2
    disks = 1 / (1 + np.exp((np.sqrt(d2) - radius) / 0.0008))
    img = (inten[:, None, None] * disks).sum(0)
    dose = rng.uniform(50, 300)
    img = rng.poisson(img * dose) / dose
    return np.log1p(10 * img).astype(np.float32)


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    n = n_train + n_val + n_test

    def make():
        rng = np.random.default_rng(seed)
        y = rng.integers(0, len(CLASSES), n)
        return {"x": np.stack([pattern(int(c), rng) for c in y])[:, None].astype(np.float16),
                "y": y}
    arrays = cached("stemdl", {"n": n, "res": RES, "seed": seed, "v": 1}, make)
    xt, yt, xv, yv, xs, ys = split(arrays["x"], arrays["y"], n_val, n_test, seed)
    mean, std = float(xt.astype(np.float32).mean()), float(xt.astype(np.float32).std())

    def tx(a):
        return torch.as_tensor((a.astype(np.float32) - mean) / std)

    def ty(a):
        return torch.as_tensor(a, dtype=torch.long)
    return Data(tx(xt), ty(yt), tx(xv), ty(yv), tx(xs), ty(ys), output_names=CLASSES)


def _vgg_block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]


def model(d: Data) -> nn.Module:
    return nn.Sequential(*_vgg_block(1, 16), *_vgg_block(16, 32), *_vgg_block(32, 64),
                         nn.Flatten(), nn.Linear(64 * (RES // 8) ** 2, 128), nn.ReLU(),
                         nn.Linear(128, len(CLASSES)))
