"""Next-item prediction over item ids with full ranking (the SASRec-style baseline's task)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recsys_core.data.sequences import NextItemBatches, left_pad, split_inputs
from recsys_core.data.sources import load_sequences
from recsys_core.metrics import ranking_metrics, target_ranks
from recsys_core.registry import build_model, get_model, register_task
from recsys_core.tasks.base import Task
from shoplab_core.devices import module_device


def full_ranking_ranks(score_fn, data, split: str, max_len: int, batch_size: int = 512,
                       device: torch.device | None = None) -> np.ndarray:
    """The 0-based rank of every user's held-out item among all items (index 0, padding, is never ranked).

    `score_fn` gets left-padded item ids [B, T] (on `device` when given, else on the CPU) and returns
    scores [B, n_items + 1] on any device; ranks are taken there and come back to the CPU."""
    histories, targets = split_inputs(data, split)
    ranks = []
    for start in range(0, len(histories), batch_size):
        inputs = left_pad(histories[start:start + batch_size], max_len)
        scores = score_fn(inputs.to(device) if device is not None else inputs).float()
        scores[:, 0] = -torch.inf
        batch_targets = torch.as_tensor(targets[start:start + batch_size], device=scores.device)
        ranks.append(target_ranks(scores, batch_targets).cpu())
    return torch.cat(ranks).numpy()


def full_ranking_eval(score_fn, data, split: str, max_len: int, batch_size: int = 512,
                      ks: tuple[int, ...] = (5, 10, 20), device: torch.device | None = None) -> dict[str, float]:
    """Recall@k and NDCG@k of `full_ranking_ranks`."""
    return ranking_metrics(full_ranking_ranks(score_fn, data, split, max_len, batch_size, device), ks)


@register_task("next_item")
class NextItemTask(Task):
    monitor = "ndcg@10"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data = load_sequences(cfg.data)
        self.max_len = int(cfg.data.get("max_len", 50))
        self.loader = NextItemBatches(self.data, self.max_len, cfg.train.batch_size)

    def build_model(self):
        inputs = {"n_items": self.data.n_items, "max_len": self.max_len}
        data_inputs = getattr(get_model(self.cfg.model).cls, "data_inputs", None)
        if data_inputs is not None:  # what a model derives from the data itself (HeterRec's item tokens)
            inputs.update(data_inputs(self.data, dict(self.cfg.model_params)))
        return build_model(self.cfg.model, self.cfg.model_params, **inputs)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_batches(self, rng: np.random.Generator):
        return self.loader.batches(rng)

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int((batch["targets"] > 0).sum())  # samples = predicted positions

    def evaluate(self, model, split: str) -> dict[str, float]:
        ranks = full_ranking_ranks(model.score_items, self.data, split, self.max_len, device=module_device(model))
        if split == "test":  # the trainer's final test evaluation: on_train_end saves these ranks
            self.last_test_ranks = (id(model), ranks)
        return ranking_metrics(ranks, (5, 10, 20))

    def on_train_end(self, model, run_dir) -> None:
        """`test_ranks.npz`: every user's test rank (user order of the data), for paired comparisons."""
        last = getattr(self, "last_test_ranks", None)
        ranks = last[1] if last and last[0] == id(model) else full_ranking_ranks(
            model.score_items, self.data, "test", self.max_len, device=module_device(model))
        np.savez_compressed(run_dir / "test_ranks.npz", rank=ranks.astype(np.int64))
        return None
