"""The contract between a task and the trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.config import ExperimentConfig


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Task:
    """A task loads its data once, builds its model from the registry, yields training batches
    (dicts of tensors) and evaluates a model on `valid` or `test` with its field's protocol.

    `monitor` is the validation metric that picks the best checkpoint (`monitor_mode` max|min).
    """

    task_name = ""
    monitor = "loss"
    monitor_mode = "min"

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def train_batches(self, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, split: str) -> dict[str, float]:
        """Metrics of `model` on `split`. Inputs go to the model's device (`shoplab_core.devices.module_device`)
        and results come back to the CPU, so a model trained on a GPU evaluates there."""
        raise NotImplementedError

    def on_train_end(self, model: torch.nn.Module, run_dir: Path) -> dict[str, Any] | None:
        """Write extra artefacts (codes, embeddings) and return extra results for metrics.json."""
        return None

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
        return 0
