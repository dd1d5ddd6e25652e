"""EM-Denoise: denoise low-dose HRTEM images of defective graphene (UNet).

Proxy (numpy, no abTEM): a graphene sheet (C-C 1.42 A) with a random rotation and 0-3% vacancies
in a 20 A field of view at 64 x 64; projected potential as a Gaussian per atom; weak-phase exit
wave ``exp(i sigma V)``; objective-lens CTF (80 kV, defocus U(-120,-20) A, Cs U(5,30)e4 A,
aperture 20-35 mrad); noisy image ``Poisson(dose * I) / dose`` with dose U(200, 2000) e/px.
Target: the noise-free image. Headline metric: MSE (PSNR reported too). WORKLOADS.md proposes
abTEM multislice; this numpy weak-phase model is much lighter and needs no extra packages.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Data, Spec, split
from .slstr import UNet

SPEC = Spec(name="em_denoise", title="EM-Denoise", proxy="numpy weak-phase HRTEM of defective "
            "graphene + CTF + Poisson dose noise, 64^2, UNet base 8", task="reconstruction", metric="mse",
            epochs=6, batch_size=32, lr=2e-3, budget=0.3, gate_inputs=False, paper_model="UNet",
            bench_batch=64, quick_epochs=2)

RES, FOV = 64, 20.0
SIZES = {"quick": (200, 50, 50), "full": (1000, 200, 300)}
WAVELENGTH = 0.0418  # A at 80 kV


def _graphene(rng) -> np.ndarray:
    a = 1.42
    a1, a2 = np.array([1.5 * a, np.sqrt(3) / 2 * a]), np.array([1.5 * a, -np.sqrt(3) / 2 * a])
    ij = np.stack(np.meshgrid(np.arange(-14, 15), np.arange(-14, 15), indexing="ij"), -1).reshape(-1, 2)
    cells = ij @ np.stack([a1, a2])
    atoms = np.concatenate([cells, cells + np.array([a, 0.0])])
    t = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    atoms = atoms @ rot.T + rng.uniform(0, FOV, 2)
    atoms = atoms[(atoms > -2).all(1) & (atoms < FOV + 2).all(1)]
    keep = rng.random(len(atoms)) > rng.uniform(0, 0.03)
    return atoms[keep]


def image(rng) -> tuple[np.ndarray, np.ndarray]:
    atoms = _graphene(rng)
    px = FOV / RES
    coords = (np.arange(RES) + 0.5) * px
    gx = np.exp(-((coords[None] - atoms[:, :1]) ** 2) / (2 * 0.25 ** 2))
    gy = np.exp(-((coords[None] - atoms[:, 1:]) ** 2) / (2 * 0.25 ** 2))
    potential = gx.T @ gy  # (x, y) sum of separable Gaussians
    wave = np.exp(1j * 0.35 * potential)
    k = np.fft.fftfreq(RES, d=px)
    k2 = k[:, None] ** 2 + k[None] ** 2
    df, cs = rng.uniform(-120, -20), rng.uniform(5, 30) * 1e4
    chi = np.pi * WAVELENGTH * df * k2 + 0.5 * np.pi * cs * WAVELENGTH ** 3 * k2 ** 2
    aperture = np.sqrt(k2) * WAVELENGTH < rng.uniform(0.020, 0.035)
    clean = np.abs(np.fft.ifft2(np.fft.fft2(wave) * np.exp(-1j * chi) * aperture)) ** 2
    dose = rng.uniform(200, 2000)
    noisy = rng.poisson(np.clip(clean, 0, None) * dose) / dose
    return noisy.astype(np.float32), clean.astype(np.float32)


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    rng = np.random.default_rng(seed)
    noisy, clean = zip(*(image(rng) for _ in range(n_train + n_val + n_test)))
    x, y = np.stack(noisy)[:, None], np.stack(clean)[:, None]
    xt, yt, xv, yv, xs, ys = split(x, y, n_val, n_test, seed)
    mean, std = float(yt.mean()), float(yt.std())

    def t(a):
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)
    return Data(t(xt), t(yt), t(xv), t(yv), t(xs), t(ys),
                notes=[f"noisy-input PSNR {_psnr(xs, ys):.1f} dB on the test split"])


def _psnr(noisy, clean) -> float:
    peak = clean.reshape(len(clean), -1).max(1) - clean.reshape(len(clean), -1).min(1)
    mse = ((noisy - clean) ** 2).reshape(len(clean), -1).mean(1)
    return float(np.mean(10 * np.log10(peak ** 2 / mse)))


def model(d: Data) -> nn.Module:
    return UNet(1, 1, 8)
