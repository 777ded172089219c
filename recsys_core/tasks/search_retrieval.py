"""Personalised e-commerce search retrieval over the sandbox catalogue: personalization and relevance.

Data: a simulator folder (`data: {kind: simulated, path: ...}`: shoppers' clicks and purchases over the
sandbox's products) and long-tail queries with their gold products (`task_params.queries_dir`: the folder
`shoplab rewrite build-data` writes, `queries_train.jsonl` / `queries_heldout.jsonl`; a query whose gold is
outside the simulator's universe is dropped and counted).

- **Personalization:** leave-one-out on every shopper's clicks (valid = second to last, test = last);
  the training prefixes build the item graph. A user is their last `n_triggers` clicks. `pers_*` metrics rank
  the held-out click over the whole universe with the recency-weighted mean of the triggers' vectors;
  `table_*` serve it the production way, through the inverted table (top `table_k` neighbours per item,
  merged over the triggers, depth `table_depth`); `itemcf_*` are the same table built from the co-click graph
  itself (the collaborative-filtering baseline, a heuristic floor, model-independent).
- **Relevance:** `rel_*` rank each query's gold item over the whole universe with the query tower
  (test = the held-out queries; valid = the last `valid_queries` share of the training queries, never
  trained on); `minilm_rel_*` is zero-shot MiniLM query ↔ title similarity (a floor; `item_text: false`
  leaves titles out of the model and drops this floor).
- `*_tail_*`: the same for targets in the tail tertile of training clicks (GCL-MO's claim: better long-tail
  item representations). `mo_lift@10`, the monitor, weighs both objectives alike (`multi_objective_lift`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.content import cached_minilm_embeddings
from recsys_core.data.item_graph import (
    InvertedTable,
    co_click_graph,
    normalized_adjacency,
)
from recsys_core.data.sequences import left_pad, split_inputs
from recsys_core.data.sources import load_sequences
from recsys_core.metrics import ranking_metrics, target_ranks
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.base import Task
from shoplab_core.devices import module_device

MAX_QUERY_CHARS = 500


def load_queries(path: Path, item_index: dict[str, int]) -> tuple[list[str], np.ndarray, int]:
    """(query texts, gold item index per query, queries dropped because no gold is in the universe)."""
    texts, gold, dropped = [], [], 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, gold_ids = str(row["query"]).strip()[:MAX_QUERY_CHARS], list(row["gold_ids"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: a query line needs 'query' and a 'gold_ids' list ({exc})") from None
        inside = [item_index[str(g)] for g in gold_ids if str(g) in item_index]
        if not query or not inside:
            dropped += 1
            continue
        texts.append(query)
        gold.append(inside[0])
    return texts, np.asarray(gold, dtype=np.int64), dropped


def tail_items(counts: np.ndarray) -> np.ndarray:
    """Boolean [n_items + 1]: items in the bottom tertile of training clicks (ties at the cut included)."""
    cut = np.quantile(counts[1:], 1 / 3)
    tail = counts <= cut
    tail[0] = False
    return tail


class GraphBatches:
    """Per step: `batch_size` anchor items with `n_positives` graph neighbours each (drawn in proportion to
    edge weight, with replacement), and `query_batch_size` training queries with their gold items."""

    def __init__(self, graph, query_vectors: np.ndarray, query_gold: np.ndarray, batch_size: int,
                 n_positives: int, query_batch_size: int):
        self.graph, self.batch_size, self.n_positives = graph, batch_size, n_positives
        self.query_vectors, self.query_gold, self.query_batch_size = query_vectors, query_gold, query_batch_size
        self.anchors = np.flatnonzero(np.diff(graph.indptr) > 0)
        if not len(self.anchors) and not len(query_gold):
            raise ValueError("nothing to train on: the item graph has no edge and there are no training queries")

    def __len__(self) -> int:
        return max(1, (max(len(self.anchors), len(self.query_gold)) + self.batch_size - 1) // self.batch_size)

    def _positives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((len(anchors), self.n_positives), dtype=np.int64)
        indptr, indices, data = self.graph.indptr, self.graph.indices, self.graph.data
        for row, item in enumerate(anchors):
            lo, hi = indptr[item], indptr[item + 1]
            weights = data[lo:hi] / data[lo:hi].sum()
            out[row] = indices[lo:hi][rng.choice(hi - lo, self.n_positives, p=weights)]
        return out

    def batches(self, rng: np.random.Generator):
        anchor_order = rng.permutation(self.anchors)
        query_order = rng.permutation(len(self.query_gold))
        for step in range(len(self)):
            batch: dict[str, Any] = {}
            if len(anchor_order):
                anchors = anchor_order[(np.arange(self.batch_size) + step * self.batch_size) % len(anchor_order)]
                batch["anchors"] = torch.as_tensor(anchors)
                batch["positives"] = torch.as_tensor(self._positives(anchors, rng))
            if len(query_order):
                rows = query_order[(np.arange(self.query_batch_size) + step * self.query_batch_size)
                                   % len(query_order)]
                batch["query_text"] = torch.as_tensor(self.query_vectors[rows])
                batch["gold"] = torch.as_tensor(self.query_gold[rows])
            yield batch


def multi_objective_lift(metrics: dict[str, float]) -> float:
    """The mean over the two objectives of NDCG@10 as a multiple of its floor (pers over item-CF, rel over
    zero-shot MiniLM; the raw NDCG@10 where a floor is absent or 0). Raw NDCGs would not do: relevance's are
    ~15x personalization's here, so their mean would early-stop on relevance alone `[proposal]`."""
    lifts = []
    for value, floor in (("pers_ndcg@10", "itemcf_ndcg@10"), ("rel_ndcg@10", "minilm_rel_ndcg@10")):
        if value in metrics:
            base = metrics.get(floor, 0.0)
            lifts.append(metrics[value] / base if base > 0 else metrics[value])
    return float(np.mean(lifts))


@register_task("search_retrieval")
class SearchRetrievalTask(Task):
    monitor = "mo_lift@10"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.data.get("kind") != "simulated":
            raise ValueError("search_retrieval needs simulator data (data.kind: simulated, data.path: a folder "
                             "written by `shoplab recsys simulate`)")
        params = dict(cfg.task_params or {})
        if "queries_dir" not in params:
            raise ValueError("task_params.queries_dir is required: a folder with queries_train.jsonl and "
                             "queries_heldout.jsonl (`shoplab rewrite build-data` writes one under data/)")
        self.data = load_sequences(cfg.data)
        self.window = int(params.get("window", 3))
        self.n_triggers = int(params.get("n_triggers", 3))
        self.table_k = int(params.get("table_k", 50))
        self.table_depth = int(params.get("table_depth", 100))
        self.decay = float(params.get("trigger_decay", 0.7))
        if min(self.n_triggers, self.table_k, self.table_depth) < 1 or not 0 < self.decay <= 1:
            raise ValueError("n_triggers, table_k, table_depth >= 1 and 0 < trigger_decay <= 1 are required")

        # what each shopper bought (the clicks that ended in a purchase, over their whole log)
        bought = [set(seq[r > 0].tolist()) for seq, r in zip(self.data.sequences, self.data.ratings, strict=True)] \
            if self.data.ratings is not None else None
        prefixes = [s[:-2] for s in self.data.sequences]
        self.graph = co_click_graph(prefixes, self.data.n_items, self.window, bought,
                                    float(params.get("purchase_weight", 2.0)), int(params.get("max_neighbours", 20)))
        self.counts = self.data.item_counts("train")
        self.tail = tail_items(self.counts)

        queries_dir = Path(params["queries_dir"])
        index = {pid: i for i, pid in enumerate(self.data.item_ids) if i > 0}
        for name in ("queries_train.jsonl", "queries_heldout.jsonl"):
            if not (queries_dir / name).exists():
                raise FileNotFoundError(f"{queries_dir / name} not found (run `shoplab rewrite build-data`)")
        train_text, train_gold, dropped_train = load_queries(queries_dir / "queries_train.jsonl", index)
        test_text, test_gold, dropped_test = load_queries(queries_dir / "queries_heldout.jsonl", index)
        n_valid = int(round(float(params.get("valid_queries", 0.15)) * len(train_text)))
        cache = params.get("text_cache", "runs/cache")
        vectors = cached_minilm_embeddings(train_text + test_text, cache) if train_text + test_text else \
            np.zeros((0, 384), dtype=np.float32)
        cut = len(train_text) - n_valid
        self.queries = {"train": (vectors[:cut], train_gold[:cut]),
                        "valid": (vectors[cut:len(train_text)], train_gold[cut:]),
                        "test": (vectors[len(train_text):], test_gold)}
        self.query_counts = {"train": cut, "valid": n_valid, "test": len(test_text),
                             "dropped": dropped_train + dropped_test}
        # item titles through MiniLM: the model's text input and the zero-shot relevance floor (off: ids,
        # attributes and the graph only; the queries still go through MiniLM)
        self.item_text: np.ndarray | None = None
        if params.get("item_text", True):
            self.item_text = cached_minilm_embeddings(list(self.data.item_text), cache)
            self.item_text[0] = 0.0
        self.loader = GraphBatches(self.graph, *self.queries["train"], cfg.train.batch_size,
                                   int(params.get("n_positives", 4)), int(params.get("query_batch_size", 128)))
        self._floors: dict[str, dict[str, float]] = {}
        self._floor_ranks: dict[str, dict[str, np.ndarray]] = {}

    def build_model(self):
        from recsys_core.models.two_tower import attribute_table

        params = dict(self.cfg.model_params)
        return build_model(self.cfg.model, params, n_items=self.data.n_items,
                           adjacency=normalized_adjacency(self.graph),
                           item_attributes=attribute_table(self.data.item_attributes, 8),
                           n_attributes=self.data.n_attributes, item_text_vectors=self.item_text,
                           query_dim=self.queries["train"][0].shape[1])

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_batches(self, rng: np.random.Generator):
        return self.loader.batches(rng)

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int(len(batch.get("anchors", ())) + len(batch.get("gold", ())))

    # -- evaluation -----------------------------------------------------------------------------------
    def triggers(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        histories, targets = split_inputs(self.data, split)
        return [h[-self.n_triggers:] for h in histories], targets

    @staticmethod
    def _exact_ranks(queries: torch.Tensor, table: torch.Tensor, targets: np.ndarray) -> np.ndarray:
        ranks = []
        for start in range(0, len(queries), 1024):
            scores = queries[start:start + 1024] @ table.T
            scores[:, 0] = -torch.inf
            ranks.append(target_ranks(scores, torch.as_tensor(targets[start:start + 1024], device=scores.device)))
        return torch.cat(ranks).cpu().numpy() if ranks else np.zeros(0, dtype=np.int64)

    @staticmethod
    def _table_ranks(results: np.ndarray, targets: np.ndarray) -> np.ndarray:
        hit = results == targets[:, None]
        return np.where(hit.any(1), hit.argmax(1), -1)

    def _metrics(self, prefix: str, ranks: np.ndarray, targets: np.ndarray, ks=(10, 50)) -> dict[str, float]:
        out = {f"{prefix}_{k}": v for k, v in ranking_metrics(ranks, ks).items()}
        tail = self.tail[targets]
        if tail.any():
            out[f"{prefix}_tail_recall@50"] = ranking_metrics(ranks[tail], (50,))["recall@50"]
        return out

    def floors(self, split: str) -> dict[str, float]:
        """Model-independent floors: item-CF through the co-click table, zero-shot MiniLM relevance."""
        if split not in self._floors:
            triggers, targets = self.triggers(split)
            table = InvertedTable.from_graph(self.graph, self.table_k)
            ranks = {"itemcf_rank": self._table_ranks(table.retrieve(triggers, self.table_depth, self.decay), targets)}
            out = self._metrics("itemcf", ranks["itemcf_rank"], targets)
            q_vectors, gold = self.queries[split]
            if len(gold) and self.item_text is not None:
                ranks["minilm_rel_rank"] = self._exact_ranks(torch.as_tensor(q_vectors), torch.as_tensor(self.item_text),
                                                             gold)
                out.update(self._metrics("minilm_rel", ranks["minilm_rel_rank"], gold))
            self._floors[split] = out
            self._floor_ranks[split] = ranks
        return self._floors[split]

    def evaluate(self, model, split: str) -> dict[str, float]:
        device = module_device(model)
        triggers, targets = self.triggers(split)
        with torch.no_grad():
            table = model.item_vectors()
            users = torch.cat([model.user_vectors(left_pad(triggers[s:s + 1024], self.n_triggers).to(device),
                                                  self.decay, table) for s in range(0, len(triggers), 1024)])
        pers = self._exact_ranks(users, table, targets)
        metrics = self._metrics("pers", pers, targets)
        vectors = table.float().cpu().numpy()
        inverted = InvertedTable.from_vectors(vectors, self.table_k)
        started = time.perf_counter()
        served = inverted.retrieve(triggers, self.table_depth, self.decay)
        serve_us = (time.perf_counter() - started) * 1e6 / max(1, len(triggers))
        table_ranks = self._table_ranks(served, targets)
        metrics.update(self._metrics("table", table_ranks, targets))
        metrics.update({"table_build_s": inverted.build_seconds, "table_serve_us": serve_us,
                        "table_mb": inverted.megabytes})
        q_vectors, gold = self.queries[split]
        rel = np.zeros(0, dtype=np.int64)
        if len(gold):
            with torch.no_grad():
                q = model.query_vectors(torch.as_tensor(q_vectors, device=device))
            rel = self._exact_ranks(q, table, gold)
            metrics.update(self._metrics("rel", rel, gold))
        metrics.update(self.floors(split))
        metrics["mo_lift@10"] = multi_objective_lift(metrics)
        if split == "test":
            self.last_test = (id(model), pers, table_ranks, rel, inverted)
        return metrics

    def on_train_end(self, model, run_dir) -> dict[str, Any]:
        """`test_ranks.npz` (per-user personalization ranks, exact and through the table; per-query relevance
        ranks; the floors' ranks: -1 = not retrieved) for paired bootstraps, and `inverted_table.npz`, the
        serving artefact."""
        last = getattr(self, "last_test", None)
        if not last or last[0] != id(model):
            self.evaluate(model, "test")
            last = self.last_test
        _, pers, table_ranks, rel, inverted = last
        np.savez_compressed(Path(run_dir) / "test_ranks.npz", rank=pers.astype(np.int64),
                            table_rank=table_ranks.astype(np.int64), rel_rank=rel.astype(np.int64),
                            **{k: v.astype(np.int64) for k, v in self._floor_ranks["test"].items()})
        inverted.save(Path(run_dir) / "inverted_table.npz")
        return {"queries": self.query_counts, "graph_edges": int(self.graph.nnz // 2),
                "tail_items": int(self.tail.sum())}
