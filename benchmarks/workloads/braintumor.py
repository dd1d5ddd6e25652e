"""BrainTumor: 4-class brain MRI classification with a ViT (paper Table II, Kaggle MRI set).

Proxy: axial slices of the real MNI152 2009a T1 template (shipped in the nilearn wheel, read with
nibabel) with synthetic lesions placed using its white/grey-matter maps: class 0 no lesion,
1 glioma (irregular blob in white matter: oedema, enhancing ring, necrotic core), 2 meningioma
(round, homogeneous, bright, at the brain's edge), 3 pituitary (small bright lesion at the sella,
MNI x = 0, y = 0, on the low slices it lives on). Class-0 slices come from every level, pituitary
levels included, so the slice level alone does not give the class away. Random rotation (+-12
degrees) and scale (0.9-1.1), a sinusoidal bias field and Rician noise; 64^2 rendering averaged
down to 32^2, each image standardised.

Model: a ViT-tiny (patch 4 on 32^2, 64 tokens plus a class token, width 64, 4 pre-norm blocks of
4 heads of 16 with separate q/k/v projections and ``scaled_dot_product_attention``, MLP 128).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Data, Spec, cached, split

SPEC = Spec(name="braintumor", title="BrainTumor", proxy="MNI152 T1 template slices + synthetic "
            "glioma/meningioma/pituitary lesions", task="classification", metric="acc",
            epochs=12, batch_size=64, lr=1e-3, budget=0.3, gate_inputs=False,
            paper_model="ViT", bench_batch=512, quick_epochs=2, requires=("nibabel", "nilearn"))

SIZES = {"quick": (600, 200, 200), "full": (6000, 1000, 1000)}
RENDER, SIZE = 64, 32
Z_ALL, Z_PITUITARY = (36, 130), (36, 48)     # voxel levels (MNI z = level - 72)
SELLA_VOXEL = (98, 134)                     # MNI (0, 0) in voxel x, y


def _template() -> tuple[np.ndarray, np.ndarray]:
    import nibabel
    root = Path(importlib.util.find_spec("nilearn").origin).parent / "datasets" / "data"
    t1, wm = (np.asarray(nibabel.load(root / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz")
                         .get_fdata(), np.float32) for k in ("t1", "wm"))
    return t1 / np.percentile(t1[t1 > 0], 99), wm


def _square(img: np.ndarray, box) -> torch.Tensor:
    (y0, y1), (x0, x1) = box
    crop = torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1]))[None, None]
    return F.interpolate(crop, size=(RENDER, RENDER), mode="bilinear", align_corners=False)[0, 0]


def _disc(shape, cy, cx, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(yy - cy, xx - cx) / radius, np.arctan2(yy - cy, xx - cx)


def _lesion(img, wm, brain, c, rng, sella):
    if c == 1:       # glioma: irregular, oedema halo, enhancing ring, necrotic core
        ys, xs = np.nonzero(wm > 0.6)
        i = rng.integers(len(ys))
        rho, angle = _disc(img.shape, ys[i], xs[i], rng.uniform(4.5, 7.0))
        rho = rho / (1 + 0.25 * np.sin(3 * angle + rng.uniform(0, 6.3))
                     + 0.15 * np.sin(5 * angle + rng.uniform(0, 6.3)))
        img = np.where(rho < 1.5, img * 0.7, img)
        img = np.where(rho < 1.0, 1.2, img)
        return np.where(rho < 0.6, 0.45, img)
    if c == 2:       # meningioma: round, bright, homogeneous, on the brain's edge
        edge = brain & ~(np.roll(brain, 3, 0) & np.roll(brain, -3, 0)
                         & np.roll(brain, 3, 1) & np.roll(brain, -3, 1))
        ys, xs = np.nonzero(edge)
        i = rng.integers(len(ys))
        rho, _ = _disc(img.shape, ys[i], xs[i], rng.uniform(4.0, 6.0))
        return np.where(rho < 1.0, 1.15 - 0.1 * rho, img)
    if c == 3:       # pituitary: small bright midline lesion at the sella
        rho, _ = _disc(img.shape, sella[0] + rng.normal(0, 0.7), sella[1] + rng.normal(0, 0.7),
                       rng.uniform(2.5, 3.5))
        return np.where(rho < 1.0, 1.2, img)
    return img


def _generate(n: int, seed: int) -> dict:
    t1, wm = _template()
    nz = np.nonzero(t1.max(2) > 0.05)
    box = ((nz[1].min(), nz[1].max() + 1), (nz[0].min(), nz[0].max() + 1))   # (y, x) extent
    side = max(box[0][1] - box[0][0], box[1][1] - box[1][0])
    box = tuple((int(a + b - side) // 2, int(a + b + side) // 2) for a, b in box)
    sella = ((SELLA_VOXEL[1] - box[0][0]) * RENDER / side, (SELLA_VOXEL[0] - box[1][0]) * RENDER / side)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    images = np.empty((n, RENDER, RENDER), np.float32)
    for i, c in enumerate(y):
        lo, hi = Z_PITUITARY if c == 3 else Z_ALL
        z = rng.integers(lo, hi + 1)
        if c == 1:               # a glioma needs white matter in the slice
            z = rng.integers(60, hi + 1)
        img = _square(t1[:, :, z].T, box).numpy()
        white = _square(wm[:, :, z].T, box).numpy()
        images[i] = _lesion(img, white, img > 0.1, int(c), rng, sella)
    x = torch.from_numpy(images)[:, None]
    angle = torch.from_numpy(np.deg2rad(rng.uniform(-12, 12, n))).float()
    scale = torch.from_numpy(rng.uniform(0.9, 1.1, n)).float()
    theta = torch.stack([torch.stack([angle.cos() / scale, -angle.sin() / scale, torch.zeros(n)], 1),
                         torch.stack([angle.sin() / scale, angle.cos() / scale, torch.zeros(n)], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False),
                      align_corners=False)
    grid = torch.linspace(-1, 1, RENDER)
    k = torch.from_numpy(rng.uniform(0.5, 2.0, (n, 3))).float()
    bias = 1 + 0.15 * torch.sin(k[:, 0, None, None] * grid[None, :, None]
                                + k[:, 1, None, None] * grid[None, None, :] + 3 * k[:, 2, None, None])
    x = x * bias[:, None]
    noise = torch.from_numpy(rng.normal(0, 0.1, (2, *x.shape))).float()
    x = torch.sqrt((x + noise[0]) ** 2 + noise[1] ** 2)                     # Rician
    x = F.avg_pool2d(x, RENDER // SIZE)
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True).clamp_min(1e-6)
    return {"x": x.numpy().astype(np.float16), "y": y}


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    n = n_train + n_val + n_test
    arrays = cached("braintumor", {"n": n, "seed": seed, "v": 2}, lambda: _generate(n, seed))
    xt, yt, xv, yv, xs, ys = split(arrays["x"], arrays["y"], n_val, n_test, seed)

    def tx(a):
        return torch.as_tensor(a.astype(np.float32))

    def ty(a):
        return torch.as_tensor(a, dtype=torch.long)
    return Data(tx(xt), ty(yt), tx(xv), ty(yv), tx(xs), ty(ys),
                output_names=["none", "glioma", "meningioma", "pituitary"],
                notes=[f"{n} slices of the MNI152 T1 template at {SIZE}^2, classes "
                       f"{np.bincount(arrays['y'], minlength=4).tolist()}"])


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape

        def heads(t):
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, size: int = SIZE, patch: int = 4, dim: int = 64, depth: int = 4,
                 heads: int = 4, hidden: int = 128, classes: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (size // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens)[:, 0])


def model(d: Data) -> nn.Module:
    return ViT()


def peer_options(model: nn.Module) -> dict:
    """What a Torch-Pruning user must write for this ViT: the head count of every q/k/v
    projection, and afterwards the patch of each block's ``num_heads``/``head_dim`` attributes
    (the forward's ``view`` reads them)."""
    attns = [b.attn for b in model.blocks]
    heads = {lin: a.num_heads for a in attns for lin in (a.q, a.k, a.v)}

    def patch(pruned: nn.Module, pruner):
        for a in (b.attn for b in pruned.blocks):
            a.num_heads = pruner.num_heads.get(a.q, a.num_heads)
            a.head_dim = a.q.out_features // a.num_heads
    return {"num_heads": heads, "ignored_layers": [model.patch_embed], "after_step": patch}
