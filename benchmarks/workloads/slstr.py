"""SLSTR: per-pixel cloud masking of 9-channel satellite scenes (UNet).

Proxy: synthetic Sentinel-3 SLSTR-like scenes at 32 x 32 (SciML-Bench uses 256^2 patches).
Land / ocean / snow from thresholded power-law Gaussian random fields (GRFs); cloud optical
depth ``tau`` a log-normal GRF, mask ``tau > 1`` (cloud fraction about 0.45). Reflectances S1, S2, S3, S5 mix the surface with cloud
tops through ``c = 1 - exp(-tau/3)`` (snow is dark in S5, as in real SWIR); brightness
temperatures S7-S9 mix the surface (265-300 K) with the cloud top (220-260 K). **S4 and S6
(channels 3 and 5) are rendered from an independent cloud-free scene**, so they look like
surface reflectance but carry no information about this scene's mask: ground-truth irrelevant
input channels. Headline metric: pixel accuracy (the paper lists MSE for SLSTR; the MSE of the
predicted probability and IoU are reported too).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Data, Spec, split

SPEC = Spec(name="slstr", title="SLSTR", proxy="synthetic 9-channel SLSTR scenes (GRF clouds, "
            "land, snow), S4/S6 scene-independent", task="segmentation", metric="pixel_acc",
            epochs=6, batch_size=32, lr=2e-3, budget=0.3, feature_cost=0.05, paper_model="UNet", bench_batch=64,
            quick_epochs=2)

RES = 32
SIZES = {"quick": (200, 50, 50), "full": (1000, 200, 300)}
CHANNELS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"]
# surface reflectance per band S1..S6: ocean, land (vegetation/soil), snow
SURF = np.array([[0.06, 0.05, 0.03, 0.02, 0.01, 0.01],
                 [0.08, 0.10, 0.09, 0.30, 0.22, 0.12],
                 [0.90, 0.88, 0.85, 0.75, 0.08, 0.04]])
CLOUD = np.array([0.75, 0.74, 0.72, 0.70, 0.55, 0.40])


def grf(rng, n: int, slope: float) -> np.ndarray:
    k = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None] ** 2)
    amp = np.where(k > 0, k, np.inf) ** (-slope / 2)
    f = np.fft.ifft2(amp * np.fft.fft2(rng.normal(size=(n, n)))).real
    return (f - f.mean()) / (f.std() + 1e-12)


def _surface(rng):
    land = grf(rng, RES, 3.0) > rng.uniform(-0.3, 0.6)
    snow = land & (grf(rng, RES, 3.0) > rng.uniform(0.5, 1.5))
    kind = np.where(snow, 2, np.where(land, 1, 0))
    refl = SURF[kind] * (1 + 0.1 * grf(rng, RES, 2.0))[..., None]
    t_surf = np.select([kind == 0, kind == 1], [290.0, 285.0], 265.0) + 5 * grf(rng, RES, 2.5)
    return refl, t_surf


def scene(rng) -> tuple[np.ndarray, np.ndarray]:
    refl, t_surf = _surface(rng)
    tau = np.exp(1.2 * grf(rng, RES, 3.5) + rng.uniform(-0.6, 0.4))
    mask = tau > 1.0
    c = (1 - np.exp(-tau / 3))[..., None]
    r = (1 - c) * refl + c * CLOUD
    other, _ = _surface(rng)  # an independent cloud-free scene for S4 and S6
    r[..., 3], r[..., 5] = other[..., 3], other[..., 5]
    t_cloud = rng.uniform(220, 260) + 4 * grf(rng, RES, 2.5)
    bt = (1 - c[..., 0]) * t_surf + c[..., 0] * t_cloud
    bts = np.stack([bt + 3 * c[..., 0] * rng.uniform(0, 1), bt, bt - 1.5 * c[..., 0]], -1)
    x = np.concatenate([r + rng.normal(0, 0.01, r.shape), bts + rng.normal(0, 0.3, bts.shape)], -1)
    return x.transpose(2, 0, 1).astype(np.float32), mask.astype(np.float32)


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    n = n_train + n_val + n_test
    rng = np.random.default_rng(seed)
    xs, ys = zip(*(scene(rng) for _ in range(n)))
    x, y = np.stack(xs), np.stack(ys)[:, None]
    xt, yt, xv, yv, xe, ye = split(x, y, n_val, n_test, seed)
    mean = xt.mean(axis=(0, 2, 3), keepdims=True)[0]
    std = xt.std(axis=(0, 2, 3), keepdims=True)[0]

    def tx(a):
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)

    def ty(a):
        return torch.as_tensor(a, dtype=torch.float32)
    pix = np.random.default_rng(seed + 1).integers(0, RES * RES, 20000)
    img = np.random.default_rng(seed + 2).integers(0, len(xt), 20000)
    raw_x = xt.reshape(len(xt), 9, -1)[img, :, pix]
    raw_y = yt.reshape(len(yt), -1)[img, pix][:, None]
    return Data(tx(xt), ty(yt), tx(xv), ty(yv), tx(xe), ty(ye), feature_names=CHANNELS,
                irrelevant=[3, 5], output_names=["cloud"], raw_x=raw_x, raw_y=raw_y,
                notes=["Pearson analysis on 20000 random training pixels: channel value vs mask"])


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A 3-level UNet (base width ``b``): conv blocks, max-pool down, transposed-conv up, skip cat.

    Shapes: input ``(B, cin, H, W)`` with H, W divisible by 4; output ``(B, cout, H, W)``.
    """

    def __init__(self, cin: int, cout: int, b: int = 16):
        super().__init__()
        self.enc1, self.enc2, self.mid = _block(cin, b), _block(b, 2 * b), _block(2 * b, 4 * b)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * b, 2 * b, 2, stride=2)
        self.dec2 = _block(4 * b, 2 * b)
        self.up1 = nn.ConvTranspose2d(2 * b, b, 2, stride=2)
        self.dec1 = _block(2 * b, b)
        self.head = nn.Conv2d(b, cout, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def model(d: Data) -> nn.Module:
    return UNet(d.x_train.shape[1], 1, 16)
