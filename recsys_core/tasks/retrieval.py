"""Embedding-based retrieval (two towers): next-item over the full catalogue, through real item indexes.

The protocol is the next-item one (leave-one-out, every user's held-out item ranked among all items), but
a retrieval model is judged the way it is served: a user vector, an item table and maximum inner-product
search. `ndcg@k` / `recall@k` are the exact ranks (a brute-force scan, what faiss's `IndexFlatIP` returns);
`hnsw_*` are the same metrics through an approximate HNSW index (top 100), `hnsw_overlap@10` is the share of
the exact top 10 the HNSW index also returns, `hnsw_query_ms` its mean search time per user.

Explicit-feedback data (MovieLens-1M keeps every rating's stars) gives the cascade click → conversion that
multi-objective retrieval (CSMF) is about: every rated movie is a *click*, one rated ≥ `conversion_min`
(4) a *conversion*. `conv_*` metrics rank the held-out item for the users whose held-out rating is a
conversion, with the model's `conversion` scenario vector when it has scenarios (plain models: the same
vector). A model reads each target's stars from `target_stars` in the batch.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from recsys_core.data.sequences import left_pad, split_inputs, training_sequences
from recsys_core.index import ItemIndex, overlap_at_k, ranks_in_results
from recsys_core.metrics import ranking_metrics, target_ranks
from recsys_core.registry import register_task
from recsys_core.tasks.next_item import NextItemTask
from shoplab_core.devices import module_device

ANN_DEPTH = 100


class RetrievalBatches:
    """Causal next-item batches (input = training prefix without its last item, targets = shifted by one)
    plus each target's stars (0 where the data has none)."""

    def __init__(self, data, max_len: int, batch_size: int):
        keep = [u for u, s in enumerate(data.sequences) if len(s) >= 4]
        self.seqs = [data.sequences[u][:-2] for u in keep]
        self.stars = [data.ratings[u][:-2] for u in keep] if data.ratings is not None else None
        self.max_len, self.batch_size = max_len, batch_size

    def __len__(self) -> int:
        return (len(self.seqs) + self.batch_size - 1) // self.batch_size

    def batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.seqs))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = {"input_ids": left_pad([self.seqs[i][:-1] for i in rows], self.max_len),
                     "targets": left_pad([self.seqs[i][1:] for i in rows], self.max_len)}
            if self.stars is not None:
                batch["target_stars"] = left_pad([self.stars[i][1:] for i in rows], self.max_len).float()
            yield batch


@register_task("retrieval")
class RetrievalTask(NextItemTask):
    """The next-item task's data, model building and batching, with target stars in the batches and
    retrieval's evaluation."""

    def __init__(self, cfg):
        super().__init__(cfg)
        params = dict(cfg.task_params or {})
        self.conversion_min = float(params.get("conversion_min", 4.0))
        self.ann = bool(params.get("ann", True))
        self.hnsw = {k: int(params[k]) for k in ("hnsw_m", "ef_search") if k in params}
        self.monitor = str(params.get("monitor", self.monitor))
        self.loader = RetrievalBatches(self.data, self.max_len, cfg.train.batch_size)
        if not training_sequences(self.data):
            raise ValueError("no user has the 4+ interactions a leave-one-out split needs")

    # -- evaluation ---------------------------------------------------------------------------------
    def _user_vectors(self, model, histories: list[np.ndarray], scenario: str | None) -> np.ndarray:
        device = module_device(model)
        out = []
        for start in range(0, len(histories), 512):
            ids = left_pad(histories[start:start + 512], self.max_len).to(device)
            vectors = model.user_vectors(ids, scenario=scenario) if scenario else model.user_vectors(ids)
            out.append(vectors.float().cpu())
        return torch.cat(out).numpy()

    def _item_table(self, model, scenario: str | None) -> np.ndarray:
        table = model.item_vectors(scenario=scenario) if scenario else model.item_vectors()
        return table.float().cpu().numpy()

    def _ranks(self, users: np.ndarray, items: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Exact 0-based ranks over the whole catalogue (padding never ranked)."""
        ranks = []
        table = torch.as_tensor(items)
        for start in range(0, len(users), 1024):
            scores = torch.as_tensor(users[start:start + 1024]) @ table.T
            scores[:, 0] = -torch.inf
            ranks.append(target_ranks(scores, torch.as_tensor(targets[start:start + 1024])))
        return torch.cat(ranks).numpy()

    def ranks(self, model, split: str, scenario: str | None = None, users: np.ndarray | None = None
              ) -> np.ndarray:
        histories, targets = split_inputs(self.data, split)
        if users is not None:
            histories, targets = [histories[u] for u in users], targets[users]
        return self._ranks(self._user_vectors(model, histories, scenario), self._item_table(model, scenario), targets)

    def conversion_users(self, split: str) -> np.ndarray:
        """Users whose held-out item of `split` is a conversion (stars ≥ conversion_min)."""
        if self.data.ratings is None:
            return np.zeros(0, dtype=np.int64)
        pos = -2 if split == "valid" else -1
        return np.flatnonzero(np.array([r[pos] >= self.conversion_min for r in self.data.ratings]))

    def evaluate(self, model, split: str) -> dict[str, float]:
        histories, targets = split_inputs(self.data, split)
        scenarios = getattr(model, "scenarios", None)
        main = scenarios[0] if scenarios else None
        users, items = self._user_vectors(model, histories, main), self._item_table(model, main)
        ranks = self._ranks(users, items, targets)
        metrics = ranking_metrics(ranks, (5, 10, 20))
        if split == "test":
            self.last_test_ranks = (id(model), ranks)
        if self.ann:
            metrics.update(self._ann_metrics(users, items, targets))
        conv = self.conversion_users(split)
        if len(conv):
            scenario = "conversion" if scenarios and "conversion" in scenarios else main
            conv_ranks = self.ranks(model, split, scenario, conv) if scenario != main else ranks[conv]
            metrics.update({f"conv_{k}": v for k, v in ranking_metrics(conv_ranks, (10, 20)).items()})
            if split == "test":
                self.last_conv_ranks = (id(model), conv_ranks)
        return metrics

    def _ann_metrics(self, users: np.ndarray, items: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        exact = ItemIndex.build(items, "exact")
        approx = ItemIndex.build(items, "hnsw", **self.hnsw)
        _, exact_top = exact.search(users, 10)
        started = time.perf_counter()
        _, approx_top = approx.search(users, ANN_DEPTH)
        query_ms = (time.perf_counter() - started) * 1000 / max(1, len(users))
        ann = ranking_metrics(ranks_in_results(approx_top, targets), (10, 20))
        return {**{f"hnsw_{k}": v for k, v in ann.items()},
                "hnsw_overlap@10": overlap_at_k(approx_top, exact_top, 10), "hnsw_query_ms": query_ms,
                "hnsw_build_s": approx.build_seconds}

    def on_train_end(self, model, run_dir) -> None:
        """`test_ranks.npz`: every user's exact test rank (and the conversion users' ranks), for paired bootstraps."""
        last = getattr(self, "last_test_ranks", None)
        ranks = last[1] if last and last[0] == id(model) else self.ranks(model, "test")
        extra: dict[str, np.ndarray] = {}
        conv = getattr(self, "last_conv_ranks", None)
        if conv and conv[0] == id(model):
            extra = {"conv_rank": conv[1].astype(np.int64), "conv_users": self.conversion_users("test")}
        np.savez_compressed(run_dir / "test_ranks.npz", rank=ranks.astype(np.int64), **extra)
        return None
