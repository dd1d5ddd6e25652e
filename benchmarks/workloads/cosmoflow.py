"""CosmoFlow: regress cosmological parameters from 3D dark-matter density cubes (3D CNN + FC).

Proxy: Zel'dovich-approximation boxes in numpy. Linear P(k) from the Eisenstein-Hu no-wiggle
transfer function normalised to sigma_8; a Gaussian field on a 16^3 grid (box 128 Mpc/h; the
paper's CosmoFlow uses 128^3 x 4, and 32^3 trained ~10x too slowly on the shared 2-core machine);
particles displaced by ``D(z) * psi`` (Carroll-Press-Turner growth), cloud-in-cell deposit,
``log1p``; four channels at z = 0, 0.5, 1.5, 3 (as CosmoFlow's four redshifts). Parameters
Omega_m ~ U(.25,.35), sigma_8 ~ U(.7,.9), n_s ~ U(.92,1), h ~ U(.6,.75); targets are
(Omega_m, sigma_8), the two a 32^3 box constrains (n_s and h are drawn but not predicted).
The paper's headline metric for CosmoFlow is MSE (standardised targets here); R^2 is reported too.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Data, Spec, cached, split

SPEC = Spec(name="cosmoflow", title="CosmoFlow", proxy="Zel'dovich dark-matter boxes, "
            "Eisenstein-Hu P(k), 4 redshift channels, 16^3", task="regression", metric="mse",
            epochs=12, batch_size=32, lr=1e-3, budget=0.2, paper_model="CONVs+FCs",
            bench_batch=64, quick_epochs=2)

N, BOX = 16, 128.0
REDSHIFTS = (0.0, 0.5, 1.5, 3.0)
SIZES = {"quick": (200, 50, 50), "full": (1000, 150, 200)}
OMEGA_B = 0.049


def _ehu_transfer(k, om, h):
    """Eisenstein & Hu (1998) no-wiggle transfer function; k in h/Mpc."""
    omh2, obh2 = om * h * h, OMEGA_B * h * h
    fb = OMEGA_B / om
    theta = 2.7255 / 2.7
    s = 44.5 * np.log(9.83 / omh2) / np.sqrt(1 + 10 * obh2 ** 0.75)
    ag = 1 - 0.328 * np.log(431 * omh2) * fb + 0.38 * np.log(22.3 * omh2) * fb * fb
    gamma = om * h * (ag + (1 - ag) / (1 + (0.43 * k * h * s) ** 4))
    q = k * theta ** 2 / gamma
    l0 = np.log(2 * np.e + 1.8 * q)
    c0 = 14.2 + 731.0 / (1 + 62.5 * q)
    return l0 / (l0 + c0 * q * q)


def power(k, om, s8, ns, h):
    """Linear P(k) at z=0 in (Mpc/h)^3, normalised so that sigma(8 Mpc/h) = s8."""
    kk = np.logspace(-4, 2, 4000)
    pk = kk ** ns * _ehu_transfer(kk, om, h) ** 2
    x = kk * 8.0
    w = 3 * (np.sin(x) - x * np.cos(x)) / x ** 3
    sigma2 = np.trapezoid(kk ** 2 * pk * w * w, kk) / (2 * np.pi ** 2)
    amp = s8 ** 2 / sigma2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = amp * k ** ns * _ehu_transfer(k, om, h) ** 2
    return np.where(k > 0, out, 0.0)


def growth(z, om):
    """Carroll, Press & Turner (1992) linear growth, D(0) = 1 (flat LCDM)."""
    def g(zz):
        a3 = (1 + zz) ** 3
        e2 = om * a3 + (1 - om)
        omz, olz = om * a3 / e2, (1 - om) / e2
        return 2.5 * omz / (omz ** (4 / 7) - olz + (1 + omz / 2) * (1 + olz / 70))
    return g(z) / (g(0.0) * (1 + z))


def _cic(pos):
    """Cloud-in-cell counts of particle positions (in cell units, periodic) on the N^3 grid."""
    i0 = np.floor(pos).astype(np.int64)
    f = pos - i0
    grid = np.zeros(N ** 3)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                idx = (((i0[:, 0] + dx) % N) * N + (i0[:, 1] + dy) % N) * N + (i0[:, 2] + dz) % N
                grid += np.bincount(idx, wx * wy * wz, minlength=N ** 3)
    return grid.reshape(N, N, N)


def simulate(params, rng) -> np.ndarray:
    om, s8, ns, h = params
    kf = 2 * np.pi / BOX
    k1 = np.fft.fftfreq(N, d=1.0 / N) * kf
    kz1 = np.fft.rfftfreq(N, d=1.0 / N) * kf
    kx, ky, kz = np.meshgrid(k1, k1, kz1, indexing="ij")
    k2 = kx ** 2 + ky ** 2 + kz ** 2
    kmag = np.sqrt(k2)
    cell = (BOX / N) ** 3
    noise = np.fft.rfftn(rng.normal(size=(N, N, N)))
    delta_k = noise * np.sqrt(power(kmag, om, s8, ns, h) / cell)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(k2 > 0, 1.0 / k2, 0.0)
    psi = [np.fft.irfftn(1j * kc * inv * delta_k, s=(N, N, N)) / (BOX / N) for kc in (kx, ky, kz)]
    q = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    disp = np.stack([p.reshape(-1) for p in psi], 1)
    out = np.empty((len(REDSHIFTS), N, N, N), np.float32)
    for c, z in enumerate(REDSHIFTS):
        out[c] = np.log1p(_cic((q + growth(z, om) * disp) % N))
    return out


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    n = n_train + n_val + n_test
    rng = np.random.default_rng(seed)
    lo, hi = np.array([0.25, 0.7, 0.92, 0.6]), np.array([0.35, 0.9, 1.0, 0.75])
    params = lo + (hi - lo) * rng.random((n, 4))

    def make():
        x = np.empty((n, len(REDSHIFTS), N, N, N), np.float16)
        for i in range(n):
            x[i] = simulate(params[i], rng)
        return {"x": x}
    x = cached("cosmoflow", {"n": n, "N": N, "box": BOX, "seed": seed}, make)["x"]
    y = params[:, :2]
    xt, yt, xv, yv, xs, ys = split(x, y, n_val, n_test, seed)
    mean = xt[:200].astype(np.float32).mean(axis=(0, 2, 3, 4), keepdims=True)[0]
    std = xt[:200].astype(np.float32).std(axis=(0, 2, 3, 4), keepdims=True)[0]
    my, sy = yt.mean(0), yt.std(0)

    def tx(a, dtype):
        out = torch.empty(a.shape, dtype=dtype)
        for i in range(0, len(a), 100):
            out[i:i + 100] = torch.from_numpy(((a[i:i + 100].astype(np.float32) - mean) / std))
        return out

    def ty(a):
        return torch.as_tensor((a - my) / sy, dtype=torch.float32)
    stats = xt.astype(np.float32).std(axis=(2, 3, 4))  # per-channel fluctuation amplitude
    return Data(tx(xt, torch.float16), ty(yt), tx(xv, torch.float32), ty(yv),
                tx(xs, torch.float32), ty(ys),
                feature_names=[f"z={z:g}" for z in REDSHIFTS], irrelevant=None,
                output_names=["Omega_m", "sigma_8"], raw_x=stats, raw_y=yt,
                notes=["Pearson analysis uses each channel's spatial std of log1p(density)"])


def model(d: Data) -> nn.Module:
    act = nn.LeakyReLU(0.1)
    return nn.Sequential(
        nn.Conv3d(len(REDSHIFTS), 8, 3, padding=1), act, nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool3d(2),
        nn.Conv3d(16, 32, 3, padding=1), nn.LeakyReLU(0.1),
        nn.Flatten(), nn.Linear(32 * (N // 4) ** 3, 128), nn.LeakyReLU(0.1),
        nn.Linear(128, 64), nn.LeakyReLU(0.1), nn.Linear(64, 2))
