"""Drive a :class:`~lumos_fx.monitor.TrainingMonitor` from training frameworks.

Neither framework is a dependency: each adapter imports its framework when
called and raises an ``ImportError`` naming the package otherwise.

- Hugging Face ``Trainer``: ``monitor.hf_callback()`` counts a step on
  ``on_step_end`` and fills in the loss the Trainer logs (``logging_steps``;
  with ``logging_steps=1`` every record has its loss). Add
  ``lumos.penalty(gated)`` to the loss with ``Trainer(compute_loss_func=...)``.
- PyTorch Lightning: ``monitor.lightning_callback()`` counts a step on
  ``on_train_batch_end`` with the loss ``training_step`` returned; add the
  penalty inside ``training_step``.

Both close the progress bar when training ends. README.md has complete,
tested examples of both.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> gated = lumos.compile(torch.nn.Linear(3, 1), example_inputs=(torch.randn(2, 3),))
    >>> monitor = lumos.TrainingMonitor(gated, every=1, progress=False)
    >>> callback = monitor.hf_callback()
    >>> type(callback).__name__, callback.monitor is monitor
    ('LumosTrainerCallback', True)
"""
from __future__ import annotations

from collections.abc import Mapping


def hf_callback(monitor):
    """A ``transformers.TrainerCallback`` that steps ``monitor``."""
    try:
        from transformers import TrainerCallback
    except ImportError as err:
        raise ImportError("monitor.hf_callback() needs the transformers package "
                          "(pip install transformers)") from err

    class LumosTrainerCallback(TrainerCallback):
        """Steps a lumos ``TrainingMonitor`` once per optimizer step of the Trainer."""

        def __init__(self):
            self.monitor = monitor

        def on_train_begin(self, args, state, control, **kwargs):
            if self.monitor.total is None and state.max_steps and state.max_steps > 0:
                self.monitor.set_total(int(state.max_steps))

        def on_step_end(self, args, state, control, **kwargs):
            self.monitor.step()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.monitor.attach_loss(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kwargs):
            self.monitor.close()

    return LumosTrainerCallback()


def _lightning_base():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as err:
            raise ImportError("monitor.lightning_callback() needs PyTorch Lightning "
                              "(pip install lightning)") from err
    return Callback


def lightning_callback(monitor):
    """A Lightning ``Callback`` that steps ``monitor`` after every training batch."""
    base = _lightning_base()

    class LumosLightningCallback(base):
        """Steps a lumos ``TrainingMonitor`` with the loss ``training_step`` returned."""

        def __init__(self):
            super().__init__()
            self.monitor = monitor

        def on_train_start(self, trainer, pl_module):
            total = getattr(trainer, "estimated_stepping_batches", None)
            if self.monitor.total is None and isinstance(total, int) and 0 < total < 2**31:
                self.monitor.set_total(total)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            self.monitor.step(loss=loss)

        def on_train_end(self, trainer, pl_module):
            self.monitor.close()

    return LumosLightningCallback()
