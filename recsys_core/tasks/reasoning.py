"""Reasoning retrieval (REG4Rec): generate the next item as a path over its unordered semantic tokens.

Config:
- `data:` a sequences section plus the codes, as `generative_retrieval` reads them (`data.sid_run` of an
  MPQ run: M expert columns + the collision column), and `data.max_items` (20).
- `task_params`:
  - `stage`: `sft` (supervised, random token orders) or `pars` (GRPO alignment from `init_from`, the
    SFT run folder whose best weights start the model);
  - `free_codebooks` (columns of the codes that are order-free; default all but the last, the
    collision column);
  - `beam_size` (20), `valid_users` (3000; 0 = all), `valid_seed`, `eval_batch_size` (256);
  - `test_users` (0 = every user; else a fixed sample drawn with `test_seed`, the same users for every
    run, so per-user ranks pair up across runs), `valid_corp` (CORP during validation; default the
    model's switch);
  - PARS: `pars_users_per_epoch` (0 = every training user once), `pars_updates` (2 passes over each
    sampled group: the clipped ratio acts from the second), `msra_steps` (S = 3 future items; 0 turns
    MSRA off).

Protocol: leave-one-out as `next_item`/`generative_retrieval` (train on all but the last two items,
validation target = second to last, test target = last), full-catalogue Recall/NDCG@5/10 from the beam
list. PARS samples (history, target, next S items) only inside each user's training prefix, so no
validation or test item reaches a reward.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.sequences import SequenceData, split_inputs, training_sequences
from recsys_core.data.sources import load_sequences
from recsys_core.metrics import codebook_stats, ranking_metrics
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.base import Task
from recsys_core.tasks.generative import METRIC_KS, load_codes, sample_users

STAGES = ("sft", "pars")


def item_windows(data: SequenceData, max_items: int) -> list[np.ndarray]:
    """Each training prefix cut from its end into windows of up to `max_items + 1` items: every item but
    a window's first is a target once, with up to `max_items` items of history."""
    windows = []
    for seq in training_sequences(data):
        for end in range(len(seq), 1, -max_items):
            windows.append(seq[max(0, end - max_items - 1):end])
    if not windows:
        raise ValueError("no training sequences: every user needs at least 4 items for leave-one-out")
    return windows


def pars_examples(data: SequenceData, rng: np.random.Generator, max_items: int, steps: int,
                  users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (history, target, next `steps` items) per training user, the target drawn uniformly from
    positions 1.. of the user's *training prefix*; histories left-padded [N, max_items], targets [N],
    futures [N, steps] (0 = past the prefix's end)."""
    prefixes = training_sequences(data)
    chosen = np.arange(len(prefixes)) if users is None else users
    hist = np.zeros((len(chosen), max_items), dtype=np.int64)
    targets = np.zeros(len(chosen), dtype=np.int64)
    futures = np.zeros((len(chosen), max(steps, 0)), dtype=np.int64)
    for row, u in enumerate(chosen):
        seq = prefixes[u]
        t = int(rng.integers(1, len(seq)))
        past = seq[max(0, t - max_items):t]
        hist[row, max_items - len(past):] = past
        targets[row] = seq[t]
        nxt = seq[t + 1:t + 1 + steps]
        futures[row, :len(nxt)] = nxt
    return hist, targets, futures


@register_task("reasoning_retrieval")
class ReasoningRetrievalTask(Task):
    monitor = "ndcg@10"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data = load_sequences(cfg.data)
        self.codes, self.codes_source = load_codes(cfg.data, self.data)
        params = cfg.task_params
        self.stage = str(params.get("stage", "sft"))
        if self.stage not in STAGES:
            raise ValueError(f"task_params.stage must be one of {STAGES}, got {self.stage!r}")
        self.free_codebooks = int(params.get("free_codebooks", self.codes.shape[1] - 1))
        self.max_items = int(cfg.data.get("max_items", 20))
        if self.max_items < 1:
            raise ValueError("data.max_items must be at least 1")
        self.beam_size = int(params.get("beam_size", 20))
        if self.beam_size < max(METRIC_KS):
            raise ValueError(f"task_params.beam_size must be at least {max(METRIC_KS)} for Recall/NDCG@10")
        self.eval_batch_size = int(params.get("eval_batch_size", 256))
        self.valid_users = sample_users(self.data.n_users, params.get("valid_users", 3000), params.get("valid_seed", 0))
        self.test_users = sample_users(self.data.n_users, params.get("test_users", 0), params.get("test_seed", 0))
        # validation picks the best epoch; CORP is an inference-time filter, so it may be left out there
        self.valid_switches = {"corp": bool(params["valid_corp"])} if "valid_corp" in params else {}
        self.windows = item_windows(self.data, self.max_items)
        self.init_from = params.get("init_from")
        if self.stage == "pars" and not self.init_from:
            raise ValueError("stage: pars aligns a trained generator: set task_params.init_from to its SFT run folder")
        self.pars_users_per_epoch = int(params.get("pars_users_per_epoch", 0))
        self.pars_updates = int(params.get("pars_updates", 2))
        self.msra_steps = int(params.get("msra_steps", 3))
        if self.pars_updates < 1 or self.msra_steps < 0:
            raise ValueError("task_params.pars_updates must be >= 1 and msra_steps >= 0")
        self.n_train_users = len(training_sequences(self.data))
        self.last_ranks: dict[str, np.ndarray] = {}
        self.decode_seconds: dict[str, float] = {}

    def build_model(self):
        model = build_model(self.cfg.model, self.cfg.model_params, item_codes=self.codes,
                            free_codebooks=self.free_codebooks, max_items=self.max_items)
        if self.init_from:
            weights = Path(self.init_from) / "best.pt"
            if not weights.exists():
                raise FileNotFoundError(f"task_params.init_from: {weights} does not exist (train the SFT stage first)")
            model.load_state_dict(torch.load(weights, map_location="cpu"))
        return model

    # ---- batches ------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        size = self.cfg.train.batch_size
        if self.stage == "pars":
            users = self.pars_users_per_epoch or self.n_train_users
            return -(-users // size) * self.pars_updates
        return -(-len(self.windows) // size)

    def train_batches(self, rng: np.random.Generator):
        size = self.cfg.train.batch_size
        if self.stage == "pars":
            n = self.pars_users_per_epoch or self.n_train_users
            users = rng.permutation(self.n_train_users)[:n]
            for batch_id, start in enumerate(range(0, len(users), size)):
                hist, targets, futures = pars_examples(self.data, rng, self.max_items, self.msra_steps,
                                                       users[start:start + size])
                batch = {"pars_history": torch.from_numpy(hist), "pars_targets": torch.from_numpy(targets),
                         "pars_batch_id": torch.tensor(batch_id)}
                if self.msra_steps:
                    batch["pars_futures"] = torch.from_numpy(futures)
                for update in range(self.pars_updates):
                    yield {**batch, "pars_pass": torch.tensor(update)}
            return
        order = rng.permutation(len(self.windows))
        for start in range(0, len(order), size):
            chunk = [self.windows[i] for i in order[start:start + size]]
            width = max(len(w) for w in chunk) - 1
            hist = np.zeros((len(chunk), width), dtype=np.int64)
            targets = np.zeros((len(chunk), width), dtype=np.int64)
            for row, w in enumerate(chunk):
                hist[row, width - len(w) + 1:] = w[:-1]
                targets[row, width - len(w) + 1:] = w[1:]
            yield {"history": torch.from_numpy(hist), "targets": torch.from_numpy(targets)}

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        if "pars_targets" in batch:
            return len(batch["pars_targets"])
        return int((batch["targets"] > 0).sum())

    # ---- evaluation ---------------------------------------------------------------------------------
    def history_items(self, histories: list[np.ndarray]) -> torch.Tensor:
        width = max(min(len(h), self.max_items) for h in histories)
        out = np.zeros((len(histories), width), dtype=np.int64)
        for row, items in enumerate(histories):
            tail = np.asarray(items[-self.max_items:], dtype=np.int64)
            out[row, width - len(tail):] = tail
        return torch.from_numpy(out)

    @torch.no_grad()
    def retrieve(self, model, histories: list[np.ndarray], beam_size: int | None = None, **switches):
        """Beam-search items [n, beam] (0 = none) and the `ReasoningPaths` batches (users sorted by history
        length, batched; `switches` = crss / corp overrides)."""
        beam = beam_size or self.beam_size
        lengths = np.array([min(len(h), self.max_items) for h in histories])
        order = np.argsort(lengths, kind="stable")
        out = torch.zeros(len(histories), beam, dtype=torch.long)
        for start in range(0, len(order), self.eval_batch_size):
            rows = order[start:start + self.eval_batch_size]
            paths = model.beam_search(self.history_items([histories[r] for r in rows]), beam, **switches)
            out[torch.as_tensor(rows), :paths.items.shape[1]] = paths.items.cpu()
        return out

    def ranks(self, model, split: str, **switches) -> np.ndarray:
        histories, targets = split_inputs(self.data, split)
        users = self.valid_users if split == "valid" else self.test_users
        if split == "valid":
            switches = {**self.valid_switches, **switches}
        started = time.perf_counter()
        items = self.retrieve(model, [histories[u] for u in users], **switches)
        self.decode_seconds[split] = round(time.perf_counter() - started, 2)
        hits = items == torch.as_tensor(targets[users]).view(-1, 1)
        return torch.where(hits.any(1), hits.int().argmax(1), torch.tensor(-1)).numpy()

    def evaluate(self, model, split: str, **switches) -> dict[str, float]:
        ranks = self.ranks(model, split, **switches)
        self.last_ranks[split] = ranks
        return ranking_metrics(ranks, METRIC_KS)

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any]:
        run_dir = Path(run_dir)
        np.save(run_dir / "codes.npy", self.codes)
        if "test" in self.last_ranks:
            np.save(run_dir / "test_ranks.npy", self.last_ranks["test"])
            np.save(run_dir / "test_users.npy", self.test_users)
        return {"stage": self.stage, "sid": {"source": self.codes_source, "free_codebooks": self.free_codebooks,
                                             **codebook_stats(self.codes[1:], model.sizes)},
                "decode_seconds": dict(self.decode_seconds)}
