"""DistributedDataParallel: a gated model trains under DDP (2 processes, gloo, CPU); the
budget penalty works on the wrapped model and every rank ends with the same gates,
controller state and extracted model."""
from __future__ import annotations

import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform == "win32",
                                reason="needs torch.distributed with gloo")

WORLD = 2
STEPS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        torch.manual_seed(0)                                  # same weights on every rank
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                              nn.Linear(32, 1))
        x = torch.randn(512, 8, generator=torch.Generator().manual_seed(1))
        y = x[:, :1] * x[:, 1:2] + x[:, 2:3]
        gated = lumos.compile(model, (x[:4],), budget=lumos.Budget(params=0.3, warmup=10))
        ddp = nn.parallel.DistributedDataParallel(gated)
        opt = torch.optim.Adam(lumos.param_groups(ddp, lr=1e-2))
        torch.manual_seed(100 + rank)                         # different gate samples per rank
        shard = torch.Generator().manual_seed(rank)           # and different batches
        for _ in range(STEPS):
            idx = torch.randint(0, len(x), (32,), generator=shard)
            loss = F.mse_loss(ddp(x[idx]), y[idx]) + lumos.penalty(ddp)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pruned = lumos.extract(ddp)
        torch.save({"gates": {k: g.log_alpha.detach() for k, g in lumos.gates(ddp).items()},
                    "controller": gated.lumos_budget.state.clone(),
                    "step": int(gated.lumos_budget.step),
                    "pruned": pruned.state_dict(), "code": pruned.code,
                    "status": lumos.budget_status(ddp, pruned).achieved},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    assert a["step"] == b["step"] == STEPS
    assert torch.equal(a["controller"], b["controller"])
    assert a["gates"].keys() == b["gates"].keys()
    for key in a["gates"]:
        assert torch.equal(a["gates"][key], b["gates"][key]), key
    assert any((g != 2.5).any() for g in a["gates"].values())      # the gates did learn
    assert a["code"] == b["code"] and a["status"] == b["status"]
    assert a["pruned"].keys() == b["pruned"].keys()
    for key in a["pruned"]:
        assert torch.equal(a["pruned"][key], b["pruned"][key]), key
