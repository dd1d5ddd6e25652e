"""CFD: a surrogate of Rodinia euler3d ``compute_flux`` (paper Table II, FCs).

Proxy: the kernel re-implemented exactly in numpy (gamma 1.4, smoothing coefficient 0.2, far field
Mach 1.2 / rho 1.4 / p 1, wing faces add ``n * p_i``), fed with sampled cell states. Inputs (53):
cell (rho, m, E); 4 faces x (rho_nb, m_nb, E_nb, normal(3), one-hot face type(3)); cell volume and
centroid. ``compute_flux`` reads neither, but only the centroid (50-52, drawn independently) is
ground-truth irrelevant: the volume is a function of the same tetrahedron as the face normals
(it scales as their area^1.5), so it is informative about the fluxes and is not labelled
irrelevant. Outputs: the 5 fluxes (density, momentum x/y/z, energy).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .base import Data, Spec, tabular

SPEC = Spec(name="cfd", title="CFD", proxy="Rodinia euler3d compute_flux, exact numpy kernel on "
            "sampled inputs", task="regression", metric="r2", epochs=20, batch_size=512, lr=2e-3,
            budget=0.1, feature_cost=0.05, paper_model="FCs", bench_batch=8192, quick_epochs=3)

GAMMA = 1.4
SMOOTHING = 0.2
SIZES = {"quick": (6000, 1000, 1000), "full": (100000, 10000, 10000)}


def _flux_contribution(rho, m, E, p, v):
    """fc_momentum_{x,y,z} (each (n,3)) and fc_density_energy (n,3)."""
    fx = np.stack([m[:, 0] * v[:, 0] + p, m[:, 0] * v[:, 1], m[:, 0] * v[:, 2]], 1)
    fy = np.stack([fx[:, 1], m[:, 1] * v[:, 1] + p, m[:, 1] * v[:, 2]], 1)
    fz = np.stack([fx[:, 2], fy[:, 2], m[:, 2] * v[:, 2] + p], 1)
    fe = v * (E + p)[:, None]
    return fx, fy, fz, fe


def _derived(rho, m, E):
    v = m / rho[:, None]
    speed_sqd = (v * v).sum(1)
    p = (GAMMA - 1) * (E - 0.5 * rho * speed_sqd)
    c = np.sqrt(np.maximum(GAMMA * p / rho, 1e-12))
    return v, speed_sqd, p, c


def _state(rng, n):
    rho = rng.uniform(0.8, 2.0, n)
    p = rng.uniform(0.5, 2.0, n)
    c = np.sqrt(GAMMA * p / rho)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    v = d * (rng.uniform(0.2, 1.5, n) * c)[:, None]
    m = rho[:, None] * v
    E = p / (GAMMA - 1) + 0.5 * rho * (v * v).sum(1)
    return rho, m, E


def _normals(rng, n):
    """Inward face normals (area-weighted) of randomly rotated, distorted tetrahedra."""
    base = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    verts = base[None] * rng.uniform(0.8, 1.2, (n, 4, 3))
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    h = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    verts = np.einsum("nij,nkj->nki", q, verts) * h[:, None, None]
    centre = verts.mean(1)
    normals = np.empty((n, 4, 3))
    for f in range(4):
        a, b, c = [verts[:, k] for k in range(4) if k != f]
        nrm = 0.5 * np.cross(b - a, c - a)
        inward = centre - a
        sign = np.sign((nrm * inward).sum(1, keepdims=True))
        normals[:, f] = nrm * sign
    volume = np.abs(np.einsum("ni,ni->n", verts[:, 1] - verts[:, 0],
                              np.cross(verts[:, 2] - verts[:, 0], verts[:, 3] - verts[:, 0]))) / 6
    return normals, volume


def compute_flux(rho, m, E, nb_rho, nb_m, nb_E, normals, kind):
    """The euler3d ``compute_flux`` loop body, vectorised over cells.

    ``kind``: (n, 4) with 0 = interior neighbour, 1 = wing (nb=-1), 2 = far field (nb=-2).
    Returns (n, 5): density, momentum x/y/z, density energy fluxes.
    """
    ff_rho, ff_p, mach = 1.4, 1.0, 1.2
    ff_speed = mach * np.sqrt(GAMMA * ff_p / ff_rho)
    ff_v = np.array([ff_speed, 0.0, 0.0])
    ff_m = ff_rho * ff_v
    ff_E = ff_rho * 0.5 * ff_speed ** 2 + ff_p / (GAMMA - 1)
    ffx, ffy, ffz, ffe = _flux_contribution(np.array([ff_rho]), ff_m[None], np.array([ff_E]),
                                            np.array([ff_p]), ff_v[None])
    v, speed_sqd, p, c = _derived(rho, m, E)
    speed = np.sqrt(speed_sqd)
    fx, fy, fz, fe = _flux_contribution(rho, m, E, p, v)
    out = np.zeros((len(rho), 5))
    for j in range(4):
        nrm = normals[:, j]
        nlen = np.linalg.norm(nrm, axis=1)
        real, wing, far = kind[:, j] == 0, kind[:, j] == 1, kind[:, j] == 2
        # interior neighbour
        r_nb, m_nb, E_nb = nb_rho[:, j], nb_m[:, j], nb_E[:, j]
        v_nb, ssq_nb, p_nb, c_nb = _derived(np.where(real, r_nb, 1.0), m_nb, np.where(real, E_nb, 1.0))
        gx, gy, gz, ge = _flux_contribution(r_nb, m_nb, E_nb, p_nb, v_nb)
        factor = -nlen * SMOOTHING * 0.5 * (speed + np.sqrt(ssq_nb) + c + c_nb)
        inner = np.zeros((len(rho), 5))
        inner[:, 0] = factor * (rho - r_nb)
        inner[:, 4] = factor * (E - E_nb)
        inner[:, 1:4] = factor[:, None] * (m - m_nb)
        half = 0.5 * nrm
        inner[:, 0] += (half * (m_nb + m)).sum(1)
        inner[:, 4] += (half * (ge + fe)).sum(1)
        inner[:, 1] += (half * (gx + fx)).sum(1)
        inner[:, 2] += (half * (gy + fy)).sum(1)
        inner[:, 3] += (half * (gz + fz)).sum(1)
        # wing: pressure on the wall
        wall = np.zeros((len(rho), 5))
        wall[:, 1:4] = nrm * p[:, None]
        # far field
        farf = np.zeros((len(rho), 5))
        farf[:, 0] = (half * (ff_m[None] + m)).sum(1)
        farf[:, 4] = (half * (ffe + fe)).sum(1)
        farf[:, 1] = (half * (ffx + fx)).sum(1)
        farf[:, 2] = (half * (ffy + fy)).sum(1)
        farf[:, 3] = (half * (ffz + fz)).sum(1)
        out += np.where(real[:, None], inner, 0) + np.where(wing[:, None], wall, 0) \
            + np.where(far[:, None], farf, 0)
    return out


def sample_kernel_inputs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    rho, m, E = _state(rng, n)
    nb_rho = rho[:, None] * rng.uniform(0.9, 1.1, (n, 4))
    nb_m = m[:, None] * rng.uniform(0.9, 1.1, (n, 4, 3)) + 0.1 * np.abs(m).mean() * rng.normal(size=(n, 4, 3))
    v_nb = nb_m / nb_rho[..., None]
    p_nb = ((GAMMA - 1) * (E[:, None] - 0.5 * rho[:, None] * ((m / rho[:, None]) ** 2).sum(1)[:, None])
            * rng.uniform(0.9, 1.1, (n, 4)))
    nb_E = p_nb / (GAMMA - 1) + 0.5 * nb_rho * (v_nb ** 2).sum(2)
    kind = rng.choice(3, size=(n, 4), p=[0.9, 0.05, 0.05])
    real = kind == 0
    nb_rho, nb_E = nb_rho * real, nb_E * real
    nb_m = nb_m * real[..., None]
    normals, volume = _normals(rng, n)
    centroid = rng.uniform(-1, 1, (n, 3))
    y = compute_flux(rho, m, E, nb_rho, nb_m, nb_E, normals, kind)
    faces = np.concatenate([nb_rho[..., None], nb_m, nb_E[..., None], normals,
                            np.eye(3)[kind]], axis=2).reshape(n, 44)
    x = np.concatenate([rho[:, None], m, E[:, None], faces, volume[:, None], centroid], axis=1)
    return x, y


def feature_names() -> list[str]:
    names = ["rho", "mx", "my", "mz", "E"]
    for f in range(4):
        names += [f"f{f}.{k}" for k in ("rho", "mx", "my", "mz", "E", "nx", "ny", "nz",
                                        "real", "wing", "far")]
    return names + ["volume", "cx", "cy", "cz"]


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    x, y = sample_kernel_inputs(n_train + n_val + n_test, seed)
    return tabular(x, y, n_val, n_test, seed, feature_names=feature_names(),
                   irrelevant=[50, 51, 52],
                   output_names=["F_rho", "F_mx", "F_my", "F_mz", "F_E"])


def model(d: Data) -> nn.Module:
    return nn.Sequential(nn.Linear(d.n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, d.y_train.shape[1]))
