"""Generative pre-training on CTR samples (DGenCTR's first stage): the CTR data and batches, no labels used.

The model's `loss(batch)` is its pre-training loss; the model exposes `pretrain_loss(batch, generator)`,
which the task evaluates on `valid`/`test` with a fixed generator, so every epoch is judged on the same
corruption of the same samples. The best checkpoint is the lowest validation pre-training loss; a CTR run
then starts from it (`model_params.init_from`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recsys_core.registry import register_task
from recsys_core.tasks.base import to_device
from recsys_core.tasks.ctr import CTRTask
from shoplab_core.devices import module_device


@register_task("ctr_pretrain")
class CTRPretrainTask(CTRTask):
    monitor = "pretrain_loss"
    monitor_mode = "min"

    def evaluate(self, model, split: str) -> dict[str, float]:
        if not hasattr(model, "pretrain_loss"):
            raise ValueError(f"{type(model).__name__} has no pretrain_loss(batch, generator): "
                             "task ctr_pretrain trains generative pre-training models (dgenctr)")
        was_training = model.training
        model.eval()
        device = module_device(model)
        # a fixed corruption per epoch; a device without generators (meta, in the device tests) draws freely
        generator = torch.Generator(device=device).manual_seed(0) if device.type in ("cpu", "cuda") else None
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.data.eval_batches(split, self.eval_batch_size):
                batch = to_device(batch, device)
                n = len(batch["label"])
                total += float(model.pretrain_loss(batch, generator)) * n
                count += n
        model.train(was_training)
        return {"pretrain_loss": total / max(count, 1)}

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any] | None:
        return None
