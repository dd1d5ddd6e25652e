"""Framework adapters of ``TrainingMonitor``: the Hugging Face Trainer (transformers and
accelerate, test extras) and PyTorch Lightning (optional, skipped when absent)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=128):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=gen)
        self.y = self.x[:, :1] - self.x[:, 1:2]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def test_hf_trainer_steps_the_monitor_and_fills_in_logged_losses(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch.manual_seed(0)
    gated = lumos.compile(MLP(), example_inputs=(torch.randn(4, 6),))
    monitor = lumos.TrainingMonitor(gated, every=4, progress=False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=16, logging_steps=4,
        report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False,
        disable_tqdm=True)
    before = {k: g.log_alpha.detach().clone() for k, g in lumos.gates(gated).items()}
    trainer = transformers.Trainer(
        model=gated, args=args, train_dataset=Rows(),
        compute_loss_func=lambda out, labels, num_items_in_batch=None:
            nn.functional.mse_loss(out, labels) + lumos.penalty(gated),
        optimizers=(torch.optim.Adam(lumos.param_groups(gated, lr=1e-2)), None),
        callbacks=[monitor.hf_callback()])
    trainer.train()
    assert monitor.total == 12
    assert [r["step"] for r in monitor.history] == [1, 4, 8, 12]
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert [r["loss"] for r in monitor.history[1:]] == pytest.approx(logged)
    assert monitor.history[0]["loss"] is None            # step 1 was not a logging step
    assert any(not torch.equal(before[k], g.log_alpha) for k, g in lumos.gates(gated).items())
    assert lumos.report(gated).to_dict()["history"] == monitor.history


def test_lightning_callback_steps_the_monitor_with_the_step_loss():
    L = pytest.importorskip("lightning")
    torch.manual_seed(0)
    gated = lumos.compile(MLP(), example_inputs=(torch.randn(4, 6),))

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.gated = gated

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.gated(batch["x"]), batch["labels"])

        def configure_optimizers(self):
            return torch.optim.Adam(lumos.param_groups(self.gated, lr=1e-2))

    monitor = lumos.TrainingMonitor(gated, every=2, progress=False)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[monitor.lightning_callback()])
    trainer.fit(Module(), torch.utils.data.DataLoader(Rows(), batch_size=16))
    assert [r["step"] for r in monitor.history] == [1, 2, 4, 6]
    assert all(isinstance(r["loss"], float) for r in monitor.history)


def test_adapters_name_the_missing_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_frameworks(name, *args, **kwargs):
        if name.split(".")[0] in ("transformers", "lightning", "pytorch_lightning"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_frameworks)
    gated = lumos.compile(MLP(), example_inputs=(torch.randn(4, 6),))
    monitor = lumos.TrainingMonitor(gated, progress=False)
    with pytest.raises(ImportError, match="pip install transformers"):
        monitor.hf_callback()
    with pytest.raises(ImportError, match="pip install lightning"):
        monitor.lightning_callback()
