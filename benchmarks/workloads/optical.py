"""Optical: detect damaged laser optics from beam images with a convolutional autoencoder.

Proxy (numpy, no LightPipes): a 1053 nm Gaussian beam (waist 4-6 mm, +-0.3 mm jitter) through an
8 mm aperture with weak random defocus/astigmatism phase; a damaged optic adds 1-3 opaque circular
defects of radius 0.1-0.4 mm; Fresnel propagation over 30-60 cm with the angular-spectrum
transfer function; intensity at 64 x 64 over a 16 mm field. As in SciML-Bench optical_damage,
the autoencoder (conv 32-16-8, dense latent 128) is trained on undamaged beams only; damage is
flagged when the reconstruction MSE exceeds a threshold chosen on a validation set.
Headline metric: reconstruction MSE on undamaged test beams (paper); anomaly accuracy and F1
are reported too.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Data, Spec

SPEC = Spec(name="optical", title="Optical", proxy="numpy Fresnel (angular spectrum) propagation "
            "of a Gaussian beam, opaque defects, 64^2", task="reconstruction", metric="mse",
            epochs=10, batch_size=32, lr=1e-3, budget=0.2, gate_inputs=False,
            paper_model="Enc.&Dec.", bench_batch=64, quick_epochs=2)

RES, SIM, FIELD = 64, 128, 16e-3
WAVELENGTH = 1053e-9
SIZES = {"quick": (200, 100, 100), "full": (1500, 300, 400)}  # undamaged train; val/test half damaged


def beam(rng, damaged: bool) -> np.ndarray:
    dx = FIELD / SIM
    c = (np.arange(SIM) - SIM / 2 + 0.5) * dx
    x, y = np.meshgrid(c, c, indexing="ij")
    x0, y0 = rng.normal(0, 0.3e-3, 2)
    w0 = rng.uniform(4e-3, 6e-3)
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    field = np.exp(-r2 / w0 ** 2) * (x ** 2 + y ** 2 < (8e-3) ** 2)
    rho2 = (x ** 2 + y ** 2) / (8e-3) ** 2
    phase = rng.normal(0, 0.4) * (2 * rho2 - 1) + rng.normal(0, 0.3) * rho2 * np.cos(
        2 * np.arctan2(y, x) + rng.uniform(0, np.pi))
    field = field * np.exp(1j * phase)
    if damaged:
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(-4e-3, 4e-3, 2)
            field = field * (((x - cx) ** 2 + (y - cy) ** 2) > rng.uniform(0.1e-3, 0.4e-3) ** 2)
    f = np.fft.fftfreq(SIM, d=dx)
    f2 = f[:, None] ** 2 + f[None] ** 2
    z = rng.uniform(0.3, 0.6)
    out = np.fft.ifft2(np.fft.fft2(field) * np.exp(-1j * np.pi * WAVELENGTH * z * f2))
    inten = np.abs(out) ** 2
    inten = inten.reshape(RES, SIM // RES, RES, SIM // RES).mean((1, 3))
    inten += rng.normal(0, 0.005, inten.shape)
    return (inten / 1.0).astype(np.float32)


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    rng = np.random.default_rng(seed)
    train = np.stack([beam(rng, False) for _ in range(n_train)])[:, None]

    def mixed(n):
        labels = rng.integers(0, 2, n)
        return np.stack([beam(rng, bool(d)) for d in labels])[:, None], labels
    xv, lv = mixed(n_val)
    xs, ls = mixed(n_test)
    mean, std = float(train.mean()), float(train.std())

    def t(a):
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)
    xt, xv, xs = t(train), t(xv), t(xs)
    # metrics: reconstruction MSE on undamaged beams; anomaly detection on the mixed splits
    val_ok, test_ok = xv[torch.as_tensor(lv == 0)], xs[torch.as_tensor(ls == 0)]
    d = Data(xt, xt, val_ok, val_ok, test_ok, test_ok)
    d.extra["metric_fn"] = lambda model, device: anomaly(model, xv, lv, xs, ls, device)
    return d


@torch.no_grad()
def _errors(model, x, device) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), 64):
        xb = x[i:i + 64].to(device)
        out.append((model(xb) - xb).pow(2).flatten(1).mean(1).cpu())
    return torch.cat(out).numpy()


def anomaly(model, xv, lv, xs, ls, device) -> dict:
    ev, es = _errors(model, xv, device), _errors(model, xs, device)
    cands = np.unique(ev)
    accs = [((ev > c) == lv).mean() for c in cands]
    thr = cands[int(np.argmax(accs))]
    pred = es > thr
    tp = float((pred & (ls == 1)).sum())
    prec = tp / max(pred.sum(), 1)
    rec = tp / max((ls == 1).sum(), 1)
    return {"anomaly_acc": float((pred == ls).mean()),
            "anomaly_f1": 2 * prec * rec / max(prec + rec, 1e-12)}


class AutoEncoder(nn.Module):
    """SciML-Bench optical_damage style AE: conv 32-16-8 (stride 2), dense latent, mirrored decoder.

    Shapes: ``(B, 1, 64, 64) -> (B, 1, 64, 64)``.
    """

    def __init__(self, latent: int = 128):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(8 * 8 * 8, latent), nn.ReLU())
        self.fc = nn.Linear(latent, 8 * 8 * 8)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1))

    def forward(self, x):
        h = torch.relu(self.fc(self.enc(x)))
        return self.dec(h.view(-1, 8, 8, 8))


def model(d: Data) -> nn.Module:
    return AutoEncoder()


def peer_options(model: nn.Module) -> dict:
    """Torch-Pruning cannot follow ``view(-1, 8, 8, 8)`` after ``fc``: keep ``fc`` whole for peers
    (lumos pins the same group)."""
    return {"ignored_layers": [model.fc]}
