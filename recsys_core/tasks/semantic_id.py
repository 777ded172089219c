"""Semantic-ID tokenization: train a tokenizer (rqvae, mmq, ada_sid, mpq) to reconstruct each item's
content features through discrete codes, then write every item's code tuple for generative retrieval.

task_params:
- modalities: list of item_modalities names (default [attributes, behaviour]; [text, attributes, behaviour]
  for simulator data, which has titles);
- feature_dim (64): attribute / PPMI-behaviour SVD size; feature_seed (0); behaviour_run: a sasrec run
  folder whose item embeddings replace the PPMI behaviour vectors;
- behaviour_finetune_epochs (0, MMQ only): the LAST this-many epochs of `train.epochs` are MMQ's
  behaviour-aware fine-tuning, trained jointly with its retriever (`model_params.retriever`) on windows of
  the users' training sequences (`behaviour_max_items` items of history, default 20; each user's last
  `behaviour_windows_per_user` windows, default 0 = all; `behaviour_batch_windows` windows a batch, 64).
  The stage is chosen by counting epochs in this task, so `--resume` restarts that count. With
  fine-tuning the checkpoint monitor is `selection`: recon_error in stage 1, −epoch in stage 2, so any
  fine-tuned state beats every stage-1 one and best.pt is the last fine-tuned state (a lower
  reconstruction error is not the goal of stage 2). Early stopping (train.patience) is refused then.

Run folder artefacts: `codes.npy` int64 [n_items+1, L+1] (row 0 zeros; the last column is TIGER's
collision suffix, 0, 1, 2, … among items sharing a tuple, in item order), `content.npy` float32
[n_items+1, d] (the concatenated modalities, rows L2-normalised) and, for a tokenizer with a router
(ADA-SID), `router.npy` float32 [n_items+1, L]: every item's weight per code column, read downstream. metrics.json gains codebook_stats,
recon_error, codebook_sizes, suffix_max and suffix_size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.content import information_richness, interaction_counts, item_modalities, l2_normalise
from recsys_core.data.sequences import item_windows
from recsys_core.data.sources import load_sequences
from recsys_core.metrics import codebook_stats
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.base import Task
from shoplab_core.devices import module_device

EVAL_CHUNK = 4096


def collision_suffix(codes: np.ndarray) -> np.ndarray:
    """0, 1, 2, … among rows sharing the same code tuple, in row order (TIGER's extra token)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty [items, levels] array, got shape {codes.shape}")
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    suffix = np.empty(len(codes), dtype=np.int64)
    suffix[order] = np.arange(len(order)) - group_start
    return suffix


@register_task("semantic_id")
class SemanticIdTask(Task):
    monitor = "recon_error"
    monitor_mode = "min"

    def __init__(self, cfg):
        super().__init__(cfg)
        params = cfg.task_params
        self.data = load_sequences(cfg.data)
        self.modality_names = list(params.get("modalities", ["attributes", "behaviour"]))
        self.features = item_modalities(self.data, self.modality_names, dim=int(params.get("feature_dim", 64)),
                                        seed=int(params.get("feature_seed", 0)),
                                        behaviour_run=params.get("behaviour_run"))
        self.richness = information_richness(interaction_counts(self.data))
        self.items = np.arange(1, self.data.n_items + 1)
        self.finetune_epochs = int(params.get("behaviour_finetune_epochs", 0))
        if self.finetune_epochs < 0 or (self.finetune_epochs and self.finetune_epochs >= cfg.train.epochs):
            raise ValueError(f"behaviour_finetune_epochs ({self.finetune_epochs}) must be >= 0 and below "
                             f"train.epochs ({cfg.train.epochs}): they are the last epochs of the run")
        if self.finetune_epochs and cfg.train.patience:
            raise ValueError("train.patience must be 0 with behaviour_finetune_epochs: early stopping in stage 1 "
                             "would skip the fine-tuning stage")
        if self.finetune_epochs:
            self.monitor = "selection"
        self.windows = None
        if self.finetune_epochs:
            self.windows = [w for w in item_windows(self.data, int(params.get("behaviour_max_items", 20)),
                                                    int(params.get("behaviour_windows_per_user", 0)))
                            if len(w) >= 2]
            if not self.windows:
                raise ValueError("behaviour fine-tuning needs training sequences of at least two items; "
                                 "the data has none")
            self.batch_windows = int(params.get("behaviour_batch_windows", 64))
            if self.batch_windows < 1:
                raise ValueError(f"task_params.behaviour_batch_windows must be positive, got {self.batch_windows}")
        self.epochs_started = 0

    @property
    def modality_dims(self) -> dict[str, int]:
        return {m: int(f.shape[1]) for m, f in self.features.items()}

    def build_model(self):
        model = build_model(self.cfg.model, self.cfg.model_params, modality_dims=self.modality_dims)
        if self.finetune_epochs and not getattr(model, "supports_behaviour_finetune", False):
            raise ValueError(f"model {self.cfg.model!r} has no behaviour-aware fine-tuning stage; "
                             "set task_params.behaviour_finetune_epochs: 0 (only mmq has one, with "
                             "model_params.retriever set)")
        return model

    def steps_per_epoch(self) -> int:
        """Steps of an average epoch (the trainer's schedule multiplies it by train.epochs): stage-2 epochs
        step over windows, not items."""
        item_steps = -(-len(self.items) // self.cfg.train.batch_size)
        if not self.finetune_epochs:
            return item_steps
        window_steps = -(-len(self.windows) // self.batch_windows)
        epochs = self.cfg.train.epochs
        return -(-((epochs - self.finetune_epochs) * item_steps + self.finetune_epochs * window_steps) // epochs)

    def item_batch(self, items: np.ndarray, prefix: str = "", device: torch.device | None = None) -> dict[str, Any]:
        batch: dict[str, Any] = {prefix + m: torch.from_numpy(f[items]) for m, f in self.features.items()}
        batch[prefix + "item"] = torch.from_numpy(np.asarray(items, dtype=np.int64))
        batch[prefix + "richness"] = torch.from_numpy(self.richness[items])
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        return batch

    def window_batch(self, windows: list[np.ndarray]) -> dict[str, Any]:
        """The distinct items of `windows` (their features) and `window` [B, T]: each window left-padded,
        as positions into those items (-1 = padding)."""
        distinct, inverse = np.unique(np.concatenate(windows), return_inverse=True)
        width = max(len(w) for w in windows)
        positions = np.full((len(windows), width), -1, dtype=np.int64)
        offset = 0
        for row, w in enumerate(windows):
            positions[row, width - len(w):] = inverse[offset:offset + len(w)]
            offset += len(w)
        return {**self.item_batch(distinct), "window": torch.from_numpy(positions)}

    def in_finetune_stage(self) -> bool:
        return bool(self.finetune_epochs) and self.epochs_started > self.cfg.train.epochs - self.finetune_epochs

    def train_batches(self, rng: np.random.Generator):
        self.epochs_started += 1
        size = self.cfg.train.batch_size
        if self.in_finetune_stage():
            order = rng.permutation(len(self.windows))
            for start in range(0, len(order), self.batch_windows):
                yield self.window_batch([self.windows[i] for i in order[start:start + self.batch_windows]])
            return
        order = rng.permutation(self.items)
        for start in range(0, len(order), size):
            yield self.item_batch(order[start:start + size])

    def item_chunks(self, model):
        """Every item, in batches of EVAL_CHUNK on the model's device."""
        device = module_device(model)
        for start in range(0, len(self.items), EVAL_CHUNK):
            yield self.item_batch(self.items[start:start + EVAL_CHUNK], device=device)

    @torch.no_grad()
    def encode_all(self, model) -> tuple[np.ndarray, float]:
        """(codes [n_items, L] of items 1..n, mean reconstruction error over all items)."""
        codes, error_sum = [], 0.0
        for batch in self.item_chunks(model):
            codes.append(model.encode(batch).cpu().numpy())
            error_sum += float(model.recon_error(batch)) * len(batch["item"])
        return np.concatenate(codes).astype(np.int64), error_sum / len(self.items)

    def evaluate(self, model, split: str) -> dict[str, float]:
        # Tokenization has no held-out items: both splits score all items.
        codes, error = self.encode_all(model)
        out = {"recon_error": error, **codebook_stats(codes, model.codebook_sizes)}
        if self.finetune_epochs:
            out["selection"] = -float(self.epochs_started) if self.in_finetune_stage() else error
        return out

    @torch.no_grad()
    def code_weights(self, model) -> np.ndarray | None:
        """[n_items + 1, L] the tokenizer's weight of each item's codes (ADA-SID's router), or None."""
        if not hasattr(model, "code_weights"):
            return None
        parts = []
        for batch in self.item_chunks(model):
            part = model.code_weights(batch)
            if part is None:
                return None
            parts.append(part.float().cpu().numpy())
        weights = np.concatenate(parts)
        return np.concatenate([np.ones((1, weights.shape[1]), dtype=np.float32), weights]).astype(np.float32)

    def content_matrix(self) -> np.ndarray:
        out = l2_normalise(np.concatenate([self.features[m] for m in self.modality_names], 1))
        out[0] = 0.0
        return out

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any]:
        model.eval()
        codes, error = self.encode_all(model)
        suffix = collision_suffix(codes)
        table = np.zeros((self.data.n_items + 1, codes.shape[1] + 1), dtype=np.int64)
        table[1:, :-1] = codes
        table[1:, -1] = suffix
        run_dir = Path(run_dir)
        np.save(run_dir / "codes.npy", table)
        np.save(run_dir / "content.npy", self.content_matrix())
        weights = self.code_weights(model)
        if weights is not None:
            np.save(run_dir / "router.npy", weights)
        return {"codebook_stats": codebook_stats(codes, model.codebook_sizes), "recon_error": error,
                "codebook_sizes": list(model.codebook_sizes), "suffix_max": int(suffix.max()),
                "suffix_size": int(suffix.max()) + 1, "modalities": self.modality_names,
                "modality_dims": self.modality_dims}
