"""Size, FLOPs, latency, throughput, peak memory and training-step time of a model.

Timings are medians of repeated runs after a warm-up, in eval mode under ``torch.no_grad``.
Peak inference memory on CPU is measured with a ``TorchDispatchMode`` that tracks the bytes
of the live tensor storages the forward pass creates (``tracemalloc`` cannot see torch's
allocator), plus the bytes of the model's parameters and buffers; on CUDA it is
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import os
import statistics
import time
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lumos_fx.report import count_flops, count_params

from .workloads.base import as_args

__all__ = ["count_flops", "count_params", "latency", "throughput", "peak_memory",
           "train_step_ms", "environment"]


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def _time_calls(model: nn.Module, x: torch.Tensor, device: str, min_seconds: float,
                max_reps: int, min_reps: int = 5, warmup: int = 3) -> list[float]:
    model.eval()
    for _ in range(warmup):
        model(*as_args(x))
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_seconds
                                     or len(times) < min_reps):
        t0 = time.perf_counter()
        model(*as_args(x))
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def latency(model: nn.Module, x1: torch.Tensor, device: str = "cpu", min_seconds: float = 0.5,
            min_reps: int = 5) -> float:
    """Median milliseconds of one forward pass at batch 1."""
    times = _time_calls(model, x1.to(device), device, min_seconds, 2000, min_reps)
    return 1e3 * statistics.median(times)


def throughput(model: nn.Module, xb: torch.Tensor, device: str = "cpu", min_seconds: float = 1.0,
               min_reps: int = 5) -> float:
    """Samples per second at the batch size of ``xb`` (median over repeats)."""
    times = _time_calls(model, xb.to(device), device, min_seconds, 200, min_reps,
                        warmup=min(3, min_reps))
    return len(xb) / statistics.median(times)


class _LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = 0

    def _release(self, key: int):
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self.live:
                    self.live[key][1] += 1
                else:
                    self.live[key] = [storage.nbytes(), 1]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, key)
        return out


def _static_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


@torch.no_grad()
def peak_memory(model: nn.Module, xb: torch.Tensor, device: str = "cpu") -> dict:
    """Peak bytes of one inference forward pass at the batch of ``xb``."""
    model.eval()
    xb = xb.to(device)
    static = _static_bytes(model)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model(*as_args(xb))
        torch.cuda.synchronize()
        activations = torch.cuda.max_memory_allocated() - base
        return {"weights_bytes": static, "activation_peak_bytes": int(activations),
                "peak_bytes": int(static + activations), "method": "torch.cuda.max_memory_allocated"}
    tracker = _LiveBytes()
    with tracker:
        out = model(*as_args(xb))
    del out
    return {"weights_bytes": static, "activation_peak_bytes": int(tracker.peak),
            "peak_bytes": int(static + tracker.peak), "method": "dispatch-mode live storages"}


def train_step_ms(models: dict, xb: torch.Tensor, yb: torch.Tensor, lossf, steps: int = 12,
                  device: str = "cpu") -> dict:
    """Median milliseconds of forward + backward + Adam step for each ``name: (model, penalty)``.

    The models take turns step by step, so a burst of load from other processes hits all alike.
    """
    xb, yb = xb.to(device), yb.to(device)
    opts = {}
    for name, (model, _) in models.items():
        model.train()
        opts[name] = torch.optim.Adam(model.parameters(), lr=1e-12)
    times = {name: [] for name in models}
    for i in range(steps + 2):
        for name, (model, penalty) in models.items():
            _sync(device)
            t0 = time.perf_counter()
            loss = lossf(model(*as_args(xb)), yb)
            if penalty is not None:
                loss = loss + penalty()
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            _sync(device)
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    for model, _ in models.values():
        model.eval()
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def environment(device: str) -> dict:
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "device": device}
    try:
        env["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env
