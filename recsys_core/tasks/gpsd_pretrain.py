"""GPSD generative pretraining: causal next-item (+ next-category) prediction on the training prefixes.

Items are given by their fields [item index, category] (as in the CTR `sequences` protocol), so the
pretrained item table transfers to `gpsd` CTR models on the same data by parameter name. Only the
training prefix of each user (all but the last two items) is ever trained on; validation ranks the
second-to-last item among all items (full ranking, `next_item.full_ranking_eval`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from recsys_core.data.ctr import sequence_item_fields
from recsys_core.data.sequences import left_pad, training_sequences
from recsys_core.data.sources import load_sequences
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.base import Task
from recsys_core.tasks.next_item import full_ranking_eval
from shoplab_core.devices import module_device


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (left-padded [B, T]; keeps >= 1 column)."""
    real = (ids > 0).any(0)
    first = int(real.float().argmax()) if real.any() else ids.shape[1] - 1
    return ids[:, first:]


@register_task("gpsd_pretrain")
class GPSDPretrainTask(Task):
    monitor = "ndcg@10"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data = load_sequences(cfg.data)
        self.max_len = int(cfg.data.get("max_len", 50))
        self.item_fields, self.field_vocab_sizes = sequence_item_fields(self.data)
        self.item_fields_t = torch.from_numpy(self.item_fields)
        self.sequences = training_sequences(self.data)
        if not self.sequences:
            raise ValueError("no training prefix has two items: nothing to pretrain on")
        self.eval_batch_size = int(cfg.task_params.get("eval_batch_size", 512))
        # users ordered by sequence length: eval batches then carry little padding (metrics are means
        # over users, so the order does not change them)
        by_length = sorted(self.data.sequences, key=len)
        self.eval_data = dataclasses.replace(self.data, sequences=by_length)

    def build_model(self):
        return build_model(self.cfg.model, self.cfg.model_params, field_vocab_sizes=list(self.field_vocab_sizes),
                           max_len=self.max_len)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.sequences) / self.cfg.train.batch_size)

    def train_batches(self, rng: np.random.Generator):
        batch_size = self.cfg.train.batch_size
        lengths = np.array([min(len(s) - 1, self.max_len) for s in self.sequences])
        order = rng.permutation(len(self.sequences))
        # batches of similar lengths (within pools of 32 random batches): most sequences are short
        batches = []
        pool = 32 * batch_size
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        for b in rng.permutation(len(batches)):
            chunk = [self.sequences[i] for i in batches[b]]
            width = int(lengths[batches[b]].max())
            inputs = left_pad([s[:-1] for s in chunk], width)
            targets = left_pad([s[1:] for s in chunk], width)
            yield {"input_fields": self.item_fields_t[inputs], "target_fields": self.item_fields_t[targets]}

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int((batch["target_fields"][..., 0] > 0).sum())  # samples = predicted positions

    def evaluate(self, model, split: str) -> dict[str, float]:
        device = module_device(model)

        def score(ids: torch.Tensor) -> torch.Tensor:  # ids on the CPU; the fields go to the model's device
            return model.score_items(self.item_fields_t[trim_padding(ids)].to(device))

        return full_ranking_eval(score, self.eval_data, split, self.max_len, batch_size=self.eval_batch_size)
