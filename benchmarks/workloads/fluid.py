"""Fluid: a surrogate of PARSEC fluidanimate ``ComputeForces`` (paper Table II, FCs).

Proxy: an SPH dam break simulated in numpy with the fluidanimate formulas (h = 1.695/ppm,
ppm = 150, rest density 1000, stiffness 3, viscosity 0.4; density kernel
``(h^2 - d^2)^3 * densityCoeff``; pressure + viscosity accelerations divided by
``rho_i * rho_j``; wall penalty 30000 / damping 128 only for the dynamics, not in the target).
Samples every 10 steps. Inputs (175): v_i, rho_i, then 24 nearest neighbours x (relative
position / h, relative velocity, rho_nb) with slots beyond h zeroed, then the absolute position
(3). ``ComputeForces`` is translation invariant, but in a sloshing tank the absolute position
correlates with the local state (depth sets the pressure, walls the neighbour counts), so it is
informative in this data and no input is labelled irrelevant. Output: the ``ComputeForces``
acceleration (3). Neighbour search is brute force (no scipy needed).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .base import Data, Spec, cached, tabular

SPEC = Spec(name="fluid", title="Fluid", proxy="PARSEC fluidanimate SPH (numpy dam break), "
            "ComputeForces target", task="regression", metric="r2", epochs=20, batch_size=512,
            lr=2e-3, budget=0.2, feature_cost=0.05, paper_model="FCs", bench_batch=8192, quick_epochs=3)

PPM = 150.0
H = 1.695 / PPM
HSQ = H * H
REST_DENSITY, DOUBLE_REST = 1000.0, 2000.0
STIFFNESS, VISCOSITY = 3.0, 0.4
MASS = 0.5 * DOUBLE_REST / PPM ** 3
DENSITY_COEFF = MASS * 315.0 / (64.0 * np.pi * H ** 9)
PRESSURE_COEFF = 3.0 * 15.0 / (np.pi * H ** 6) * 0.5 * STIFFNESS * MASS
VISCOSITY_COEFF = VISCOSITY * 45.0 / (np.pi * H ** 6) * MASS
GRAVITY = np.array([0.0, -9.8, 0.0])
DT = 1e-3
BOX = np.array([0.3, 0.16, 0.08])
K = 24
# (steps, sample every): quick needs only a few snapshots
SIZES = {"quick": (80, 10, 2000, 2000), "full": (400, 10, 8000, 8000)}


def _pairs(pos):
    sq = (pos * pos).sum(1)
    d2 = sq[:, None] + sq[None] - 2.0 * pos @ pos.T
    np.fill_diagonal(d2, np.inf)
    return d2


def _forces(pos, vel, d2):
    i, j = np.nonzero(d2 < HSQ)
    dist2 = np.maximum(d2[i, j], 1e-24)
    density = np.full(len(pos), HSQ ** 3)
    np.add.at(density, i, (HSQ - dist2) ** 3)
    density *= DENSITY_COEFF
    dist = np.sqrt(dist2)
    hmr = H - dist
    disp = pos[i] - pos[j]
    acc_pair = (disp * (PRESSURE_COEFF * hmr * hmr / dist
                        * (density[i] + density[j] - DOUBLE_REST))[:, None]
                + (vel[j] - vel[i]) * (VISCOSITY_COEFF * hmr)[:, None])
    acc_pair /= (density[i] * density[j])[:, None]
    acc = np.zeros_like(pos)
    for a in range(3):
        acc[:, a] = np.bincount(i, acc_pair[:, a], minlength=len(pos))
    return acc + GRAVITY, density


def _walls(pos, vel, acc):
    acc = acc.copy()
    par, stiff, damp = 2e-4, 30000.0, 128.0
    lo = par - pos
    hi = par - (BOX - pos)
    acc += np.where(lo > 1e-10, stiff * lo - damp * vel, 0.0)
    acc -= np.where(hi > 1e-10, stiff * hi + damp * vel, 0.0)
    return acc


def _features(pos, vel, density, d2):
    n = len(pos)
    nn_idx = np.argpartition(d2, K, axis=1)[:, :K]
    nn_d2 = np.take_along_axis(d2, nn_idx, 1)
    order = np.argsort(nn_d2, axis=1)
    nn_idx = np.take_along_axis(nn_idx, order, 1)
    inside = (np.take_along_axis(nn_d2, order, 1) < HSQ)[..., None]
    rel_p = (pos[nn_idx] - pos[:, None]) / H
    rel_v = vel[nn_idx] - vel[:, None]
    rho_nb = density[nn_idx][..., None] / REST_DENSITY
    slots = np.concatenate([rel_p, rel_v, rho_nb], 2) * inside
    return np.concatenate([vel, density[:, None] / REST_DENSITY, slots.reshape(n, K * 7), pos], 1)


def simulate(steps: int, every: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    spacing = 1.0 / PPM
    g = np.stack(np.meshgrid(np.arange(19), np.arange(15), np.arange(9), indexing="ij"), -1)
    pos = (g.reshape(-1, 3) + 0.5) * spacing + 1e-3
    pos += rng.normal(0, 1e-4, pos.shape)
    vel = np.zeros_like(pos)
    hv = vel.copy()
    xs, ys = [], []
    for step in range(steps):
        d2 = _pairs(pos)
        acc, density = _forces(pos, vel, d2)
        if step % every == every - 1:
            xs.append(_features(pos, vel, density, d2))
            ys.append(acc - GRAVITY)
        acc = _walls(pos + hv * DT, vel, acc)
        v_half = hv + acc * DT
        pos = np.clip(pos + v_half * DT, 0.0, BOX)
        vel = 0.5 * (hv + v_half)
        hv = v_half
    return {"x": np.concatenate(xs).astype(np.float32), "y": np.concatenate(ys).astype(np.float32)}


def feature_names() -> list[str]:
    names = ["vx", "vy", "vz", "rho"]
    for k in range(K):
        names += [f"n{k}.{f}" for f in ("dx", "dy", "dz", "dvx", "dvy", "dvz", "rho")]
    return names + ["px", "py", "pz"]


def data(size: str, seed: int) -> Data:
    steps, every, n_val, n_test = SIZES[size]
    arrays = cached("fluid", {"steps": steps, "every": every, "seed": seed},
                    lambda: simulate(steps, every, seed))
    x, y = arrays["x"].astype(np.float64), arrays["y"].astype(np.float64)
    return tabular(x, y, n_val, n_test, seed, feature_names=feature_names(),
                   output_names=["ax", "ay", "az"])


def model(d: Data) -> nn.Module:
    return nn.Sequential(nn.Linear(d.n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, d.y_train.shape[1]))
