"""PureMD: a surrogate of PuReMD ``Add_dBond_to_Forces`` (paper Table II, FCs).

Proxy: the exact arithmetic of the non-neural branch of ReaxFF ``Add_dBond_to_Forces`` (as in
sPuReMD/LAMMPS reaxc), on sampled bond terms: derivative vectors parallel to a random bond
direction with log-normal magnitudes, coefficients normal. Inputs (34): C1-3dbo, C1-4dbopi,
C1-4dbopi2, Cdbo_ij/ji, Cdbopi_ij/ji, Cdbopi2_ij/ji, CdDelta_i/j, dBOp, dln_BOp_pi, dln_BOp_pi2,
dDeltap_self_i, dDeltap_self_j (3 each). Output: the force on atom i (3). ``f_i`` never reads
C3dbo, C4dbopi, C4dbopi2 or dDeltap_self_j: 6 ground-truth irrelevant inputs.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .base import Data, Spec, tabular

SPEC = Spec(name="puremd", title="PureMD", proxy="PuReMD Add_dBond_to_Forces exact arithmetic, "
            "sampled bond terms (f_i)", task="regression", metric="r2", epochs=20, batch_size=512,
            lr=2e-3, budget=0.2, feature_cost=0.05, paper_model="FCs", bench_batch=8192, quick_epochs=3)

SIZES = {"quick": (6000, 1000, 1000), "full": (160000, 10000, 10000)}
SCALARS = (["C1dbo", "C2dbo", "C3dbo"] + [f"C{k}dbopi" for k in range(1, 5)]
           + [f"C{k}dbopi2" for k in range(1, 5)]
           + ["Cdbo_ij", "Cdbo_ji", "Cdbopi_ij", "Cdbopi_ji", "Cdbopi2_ij", "Cdbopi2_ji",
              "CdDelta_i", "CdDelta_j"])
VECTORS = ["dBOp", "dln_BOp_pi", "dln_BOp_pi2", "dDeltap_self_i", "dDeltap_self_j"]


def feature_names() -> list[str]:
    return SCALARS + [f"{v}.{a}" for v in VECTORS for a in "xyz"]


def add_dbond_to_forces(s: dict, v: dict):
    """Forces on i and j from one bond (ReaxFF ``Add_dBond_to_Forces``, non-NN branch)."""
    cdbo = s["Cdbo_ij"] + s["Cdbo_ji"]
    cdbopi = s["Cdbopi_ij"] + s["Cdbopi_ji"]
    cdbopi2 = s["Cdbopi2_ij"] + s["Cdbopi2_ji"]
    cddelta = s["CdDelta_i"] + s["CdDelta_j"]
    c = {k: s[f"C{k}dbo"] * cdbo for k in (1, 2, 3)}
    cpi = {k: s[f"C{k}dbopi"] * cdbopi for k in (1, 2, 3, 4)}
    cpi2 = {k: s[f"C{k}dbopi2"] * cdbopi2 for k in (1, 2, 3, 4)}
    cdd = {k: s[f"C{k}dbo"] * cddelta for k in (1, 2, 3)}

    def w(a):
        return a[:, None]
    dbop, pi, pi2 = v["dBOp"], v["dln_BOp_pi"], v["dln_BOp_pi2"]
    di, dj = v["dDeltap_self_i"], v["dDeltap_self_j"]
    f_i = (w(c[1]) * dbop + w(c[2]) * di + w(cdd[1]) * dbop + w(cdd[2]) * di
           + w(cpi[1]) * pi + w(cpi[2]) * dbop + w(cpi[3]) * di
           + w(cpi2[1]) * pi2 + w(cpi2[2]) * dbop + w(cpi2[3]) * di)
    f_j = (-w(c[1]) * dbop + w(c[3]) * dj - w(cdd[1]) * dbop + w(cdd[3]) * dj
           - w(cpi[1]) * pi - w(cpi[2]) * dbop + w(cpi[4]) * dj
           - w(cpi2[1]) * pi2 - w(cpi2[2]) * dbop + w(cpi2[4]) * dj)
    return f_i, f_j


def sample(n: int, seed: int):
    rng = np.random.default_rng(seed)
    s = {k: rng.normal(0, 1, n) for k in SCALARS}
    bond = rng.normal(size=(n, 3))
    bond /= np.linalg.norm(bond, axis=1, keepdims=True)
    v = {k: bond * rng.lognormal(0, 0.5, (n, 1)) * rng.choice([-1, 1], (n, 1))
         for k in VECTORS[:3]}
    for k in VECTORS[3:]:
        v[k] = rng.normal(size=(n, 3)) * rng.lognormal(0, 0.5, (n, 1))
    f_i, _ = add_dbond_to_forces(s, v)
    x = np.concatenate([np.stack([s[k] for k in SCALARS], 1)] + [v[k] for k in VECTORS], 1)
    return x, f_i


def data(size: str, seed: int) -> Data:
    n_train, n_val, n_test = SIZES[size]
    x, y = sample(n_train + n_val + n_test, seed)
    names = feature_names()
    irrelevant = [names.index(k) for k in ("C3dbo", "C4dbopi", "C4dbopi2")]
    irrelevant += [names.index(f"dDeltap_self_j.{a}") for a in "xyz"]
    return tabular(x, y, n_val, n_test, seed, feature_names=names, irrelevant=sorted(irrelevant),
                   output_names=["f_i.x", "f_i.y", "f_i.z"])


def model(d: Data) -> nn.Module:
    return nn.Sequential(nn.Linear(d.n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, d.y_train.shape[1]))
