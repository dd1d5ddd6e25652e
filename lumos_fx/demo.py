"""The built-in demo: prune a SciML surrogate end to end (``lumos-fx demo``).

The workload is a synthetic finite-volume flux surrogate. Each sample is one
cell face described by 20 named features; only four of them determine the
two targets, the inviscid mass flux and the x-momentum flux with a viscous
normal stress::

    mass_flux     = density * velocity_x
    momentum_flux = density * velocity_x**2 + pressure - 4/3 * MU * dudx

The other sixteen (transverse velocities, mesh geometry, solver bookkeeping...)
are independent distractors. Inputs and targets are standardised, and the
targets carry 1% noise.

:func:`run_demo` trains a baseline MLP, compiles it with lumos_fx, trains the
gated model with the L0 penalty, extracts the smaller model, checks it against
the gated one, measures R² on held-out data, exports it with ``torch.export``
(dynamic batch), saves, reloads and re-checks it, and returns a text report.

Example::

    >>> from lumos_fx.demo import make_surrogate_data
    >>> data = make_surrogate_data(1000, seed=0)
    >>> data.x.shape, data.y.shape, data.informative
    (torch.Size([1000, 20]), torch.Size([1000, 2]), ['density', 'velocity_x', 'pressure', 'dudx'])
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import lumos_fx as lumos

DEFAULT_STEPS = 1500
N_TRAIN, N_TEST = 8192, 2048
MU = 0.3
FEATURE_NAMES = [
    "density", "velocity_x", "velocity_y", "velocity_z", "pressure", "turbulent_ke",
    "species_fraction", "cell_volume", "dudx", "centroid_x", "centroid_y", "centroid_z",
    "wall_distance", "face_area_ratio", "mesh_skewness", "time", "time_step", "solver_residual",
    "partition_rank", "cell_age",
]
INFORMATIVE = ["density", "velocity_x", "pressure", "dudx"]
OUTPUT_NAMES = ["mass_flux", "momentum_flux"]


@dataclass
class SurrogateData:
    """Standardised inputs ``x`` (n, 20) and targets ``y`` (n, 2) with their names."""

    x: torch.Tensor
    y: torch.Tensor
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    informative: list[str] = field(default_factory=lambda: list(INFORMATIVE))
    output_names: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))


def _raw_features(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "density": rng.uniform(0.5, 2.0, n),
        "velocity_x": rng.uniform(-1.5, 1.5, n),
        "velocity_y": rng.normal(0.0, 0.5, n),
        "velocity_z": rng.normal(0.0, 0.5, n),
        "pressure": rng.uniform(0.5, 2.0, n),
        "turbulent_ke": rng.lognormal(-2.0, 0.5, n),
        "species_fraction": rng.beta(2.0, 5.0, n),
        "cell_volume": rng.lognormal(-6.0, 0.3, n),
        "dudx": rng.normal(0.0, 1.0, n),
        "centroid_x": rng.uniform(0.0, 1.0, n),
        "centroid_y": rng.uniform(0.0, 0.5, n),
        "centroid_z": rng.uniform(0.0, 0.25, n),
        "wall_distance": rng.exponential(0.05, n),
        "face_area_ratio": rng.uniform(0.8, 1.25, n),
        "mesh_skewness": rng.beta(1.5, 8.0, n),
        "time": rng.uniform(0.0, 2.0, n),
        "time_step": rng.lognormal(-9.0, 0.2, n),
        "solver_residual": rng.lognormal(-12.0, 1.0, n),
        "partition_rank": rng.integers(0, 16, n).astype(np.float64),
        "cell_age": rng.uniform(0.0, 100.0, n),
    }


def make_surrogate_data(n: int, seed: int = 0) -> SurrogateData:
    """``n`` samples of the flux surrogate, standardised per column."""
    rng = np.random.default_rng(seed)
    raw = _raw_features(n, rng)
    rho, u, p, dudx = (raw[k] for k in INFORMATIVE)
    y = np.stack([rho * u, rho * u * u + p - 4.0 / 3.0 * MU * dudx], axis=1)
    y = y + 0.01 * y.std(axis=0) * rng.normal(size=y.shape)
    x = np.stack([raw[k] for k in FEATURE_NAMES], axis=1)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean(0)) / y.std(0)
    return SurrogateData(torch.as_tensor(x, dtype=torch.float32),
                         torch.as_tensor(y, dtype=torch.float32))


def make_baseline(n_in: int = 20, width: int = 128, n_out: int = 2) -> nn.Module:
    """The surrogate an engineer would write first: 20-128-128-2, SiLU."""
    return nn.Sequential(nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                         nn.Linear(width, n_out))


def r2_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination, averaged over the outputs."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(x)
    model.train(was_training)
    ss_res = ((pred - y) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return float((1.0 - ss_res / ss_tot).mean())


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("lumos_"))


def _train(model, x, y, steps, param_groups, *, penalty=None, desc="", progress=False,
           batch_size=256, seed=0, monitor=None):
    """Adam with cosine decay of the weights' rate; returns the last task loss."""
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(param_groups)
    # the weights' rate decays; a gates' group (tagged "lumos") keeps its constant rate
    lambdas = [(lambda s: 1.0) if g.get("lumos") == "gates"
               else (lambda s: 0.5 * (1.0 + np.cos(np.pi * s / steps))) for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    bar = tqdm(range(steps), desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    model.train()
    mse = pen = float("nan")
    for step in bar:
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(x.device)
        task = nn.functional.mse_loss(model(x[idx]), y[idx])
        loss = task
        if penalty is not None:
            reg = penalty(model)
            loss = task + reg
            pen = reg.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        mse = task.item()
        if monitor is not None:
            monitor.step(loss=mse)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix(mse=f"{mse:.4f}", **({"penalty": f"{pen:.3f}"} if penalty else {}))
    bar.close()
    model.eval()
    return mse


@dataclass
class DemoResult:
    """Everything :func:`run_demo` measured; ``str()`` is the printed report."""

    report: object
    r2_baseline: float
    r2_pruned: float
    params_baseline: int
    params_pruned: int
    exactness_error: float
    export_error: float
    informative: list[str]
    kept_features: list[str]
    export_path: str
    seconds: float
    steps: int
    html_path: str = ""

    def __str__(self) -> str:
        true_set, kept_set = set(self.informative), set(self.kept_features)
        if kept_set == true_set:
            verdict = "exactly the informative features"
        else:
            missed = [f for f in self.informative if f not in kept_set]
            extra = [f for f in self.kept_features if f not in true_set]
            verdict = ", ".join(filter(None, [
                f"missed {', '.join(missed)}" if missed else "",
                f"also kept {', '.join(extra)}" if extra else ""]))
        return "\n".join([
            str(self.report),
            "",
            f"held-out R^2          baseline {self.r2_baseline:.4f}  ->  pruned {self.r2_pruned:.4f}",
            f"parameters            baseline {self.params_baseline:,}  ->  pruned "
            f"{self.params_pruned:,} ({self.params_pruned / self.params_baseline:.1%})",
            f"exactness             max relative error pruned vs gated.eval(): "
            f"{self.exactness_error:.2e}",
            f"informative features  {', '.join(self.informative)}",
            f"kept features         {', '.join(self.kept_features)}  ({verdict})",
            f"exported              {self.export_path} (dynamic batch; reloaded, relative "
            f"error {self.export_error:.2e})",
            f"report page           {self.html_path} (open it in a browser: the layers before "
            f"and after, the features, the kept fraction over training)",
            f"demo took {self.seconds:.1f} s ({self.steps} steps per training run)",
        ])


def demo_result(steps: int = DEFAULT_STEPS, seed: int = 0, out_dir: str = "lumos_demo_out",
                device: str = "cpu", progress: bool = True) -> DemoResult:
    """Run the demo and return its measurements (see :func:`run_demo`)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    device = torch.device(device)
    # one draw (one standardisation), split into training and held-out samples
    data = make_surrogate_data(N_TRAIN + N_TEST, seed)
    x, y = data.x[:N_TRAIN].to(device), data.y[:N_TRAIN].to(device)
    x_test, y_test = data.x[N_TRAIN:].to(device), data.y[N_TRAIN:].to(device)

    # (a) the baseline
    baseline = make_baseline().to(device)
    _train(baseline, x, y, steps, [{"params": list(baseline.parameters()), "lr": 3e-3}],
           desc="baseline", progress=progress, seed=seed)

    # (b) gate it and train with the L0 penalty (compile copies; the baseline stays as it is)
    gated = lumos.compile(baseline, example_inputs=(x[:64].clone(),), feature_names=FEATURE_NAMES)
    if hasattr(lumos, "param_groups"):
        groups = lumos.param_groups(gated, lr=1e-3)
    else:
        groups = [{"params": list(gated.parameters()), "lr": 1e-3}]
    monitor = lumos.TrainingMonitor(gated, every=max(steps // 100, 1), progress=False, total=steps)
    _train(gated, x, y, steps, groups, penalty=lumos.penalty, desc="lumos", progress=progress,
           seed=seed + 1, monitor=monitor)

    # (c) extract, (d) check it, (e) score it
    gated.eval()
    pruned = lumos.extract(gated)
    err = lumos.verify(gated, pruned, (x_test,))
    rep = lumos.report(gated)     # includes the monitor's history
    kept = list(next(iter(rep.kept_features.values()))) if rep.kept_features else []

    # (f) export with a dynamic batch, save, reload, compare
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "pruned.pt2")
    batch = torch.export.Dim("batch", min=1)
    example = x[:64].clone()  # a view would make torch.export.save store all of x's storage
    program = torch.export.export(pruned, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    reloaded = torch.export.load(path).module()
    with torch.no_grad():
        expected = pruned(x_test)
        export_err = float((reloaded(x_test) - expected).norm() / expected.norm())
    html_path = os.path.join(out_dir, "report.html")
    rep.to_html(html_path)

    return DemoResult(
        report=rep, r2_baseline=r2_score(baseline, x_test, y_test),
        r2_pruned=r2_score(pruned, x_test, y_test), params_baseline=_count_params(baseline),
        params_pruned=_count_params(pruned), exactness_error=err, export_error=export_err,
        informative=list(INFORMATIVE), kept_features=kept, export_path=path,
        seconds=time.perf_counter() - start, steps=steps, html_path=html_path)


def run_demo(steps: int = DEFAULT_STEPS, seed: int = 0, out_dir: str = "lumos_demo_out",
             device: str = "cpu", progress: bool = True) -> str:
    """Train, prune, verify and export the flux surrogate; return the text report.

    Args:
        steps: training steps for the baseline and again for the gated model.
        seed: seeds the data, the initialisation, the batches and the gate noise.
        out_dir: where ``pruned.pt2`` (a ``torch.export`` program) and ``report.html``
            (the report page) are written.
        device: torch device to train on.
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
    """
    # One intra-op thread: a 128-wide MLP on 256-row batches gains nothing from more, and on a
    # busy 2-core machine two OpenMP threads spin-wait (measured: 14x the CPU time per step).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return str(demo_result(steps, seed, out_dir, device, progress))
    finally:
        torch.set_num_threads(threads)
