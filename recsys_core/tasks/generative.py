"""Generative retrieval over semantic IDs (TIGER protocol): each item is a tuple of L codes, a model
generates the next item's codes, and beam search restricted to a prefix trie of the catalogue's code
tuples turns the beams into a ranked list of real items.

Config:
- `data:` a sequences section (`load_sequences`: s3rec | simulated | synthetic) plus the codes, one of
  `data.sid_run: DIR` (a tokenizer run folder holding `codes.npy`), `data.codes: FILE.npy`, or
  `data.codes: kmeans` (built here: residual k-means over the L2-normalised item-attribute multi-hot
  with `data.kmeans_sizes`, default [16, 16], plus a collision suffix; seeded by `data.kmeans_seed`).
  Codes are int64 [n_items + 1, L], row 0 unused, every item's tuple distinct (the last column is
  TIGER's collision suffix). `data.max_items` (default 20, TIGER's setting) is the history length.
  `data.windows_per_user` (0 = all) keeps each user's most recent training windows only (CPU-sized runs).
- `task_params`: `beam_size` (20), `valid_users` (3000 users with a fixed seed evaluate each epoch;
  0 = all; test always uses every user), `valid_seed` (0), `eval_batch_size` (256 users),
  `router_scales` (auto: an ADA-SID run's `router.npy` scales the behavioural token embeddings, by the
  mean router weight of the items sharing the token's prefix; true / false force it).

Recall@10 is also reported per popularity group of the target (`recall@10_head/torso/tail`: the items cut
into thirds by training count) with the number of users in each group.

Leave-one-out exactly as `next_item`: train on all but the last two items, validation target = the
second to last, test target = the last. A target's rank is its position in the beam list (-1 when
not among the beams), so Recall/NDCG@k are full-catalogue metrics with no sampled negatives.

Order-free tokens (e.g. MPQ's M parallel codebooks) are generated in the fixed expert order of the
codes' columns; the trie then still maps every finished beam to exactly one item.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.semantic_ids import load_router, validate_codes
from recsys_core.data.sequences import SequenceData, item_windows, split_inputs
from recsys_core.data.sources import load_sequences
from recsys_core.metrics import codebook_stats, ranking_metrics
from recsys_core.registry import build_model, register_task
from recsys_core.tasks.base import Task
from recsys_core.tasks.semantic_id import collision_suffix
from shoplab_core.devices import module_device

METRIC_KS = (5, 10)


# ---- codes ------------------------------------------------------------------------------------------
def add_collision_suffix(codes: np.ndarray) -> np.ndarray:
    """Append TIGER's collision column: 0, 1, 2, ... over the items (in row order) sharing a tuple."""
    codes = np.asarray(codes, dtype=np.int64)
    return np.concatenate([codes, collision_suffix(codes)[:, None]], axis=1)


def kmeans_codes(features: np.ndarray, sizes: list[int], seed: int = 0) -> np.ndarray:
    """Residual k-means codes (one level per entry of `sizes`) plus a collision suffix: [n, len(sizes) + 1].

    A quick stand-in tokenizer (RQ-KMeans): level l clusters what the previous levels' centroids
    left unexplained."""
    from sklearn.cluster import KMeans

    residual = np.asarray(features, dtype=np.float64).copy()
    if residual.ndim != 2 or len(residual) == 0:
        raise ValueError(f"features must be a non-empty [n, d] matrix, got shape {residual.shape}")
    if not sizes or min(int(s) for s in sizes) < 1:
        raise ValueError(f"kmeans sizes must be positive cluster counts, got {sizes}")
    levels = []
    for level, size in enumerate(sizes):
        distinct = len(np.unique(residual.round(8), axis=0))
        k = max(1, min(int(size), distinct))
        km = KMeans(n_clusters=k, n_init=1, random_state=seed + level).fit(residual)
        levels.append(km.labels_.astype(np.int64))
        residual = residual - km.cluster_centers_[km.labels_]
    return add_collision_suffix(np.stack(levels, axis=1))


def item_attribute_features(data: SequenceData) -> np.ndarray:
    """L2-normalised attribute multi-hot per item index (row 0 = padding, zeros) [n_items + 1, n_attrs + 1]."""
    features = np.zeros((data.n_items + 1, data.n_attributes + 1), dtype=np.float32)
    for item, attrs in enumerate(data.item_attributes):
        if item and attrs:
            features[item, attrs] = 1.0
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def load_codes(data_cfg: dict[str, Any], data: SequenceData) -> tuple[np.ndarray, str]:
    """The codes named by the data section (see the module docstring) and a description of their source."""
    sid_run, codes_opt = data_cfg.get("sid_run"), data_cfg.get("codes")
    if sid_run and codes_opt:
        raise ValueError("give either data.sid_run or data.codes, not both")
    if codes_opt == "kmeans":
        sizes = list(data_cfg.get("kmeans_sizes", [16, 16]))
        seed = int(data_cfg.get("kmeans_seed", 0))
        codes = np.zeros((data.n_items + 1, len(sizes) + 1), dtype=np.int64)
        codes[1:] = kmeans_codes(item_attribute_features(data)[1:], sizes, seed)
        source = f"kmeans{sizes} on item attributes"
    elif sid_run or codes_opt:
        path = Path(sid_run) / "codes.npy" if sid_run else Path(codes_opt)
        if not path.exists():
            hint = "a tokenizer run folder with codes.npy" if sid_run else "a .npy file"
            raise FileNotFoundError(f"semantic-ID codes {path} not found: data.{'sid_run' if sid_run else 'codes'} "
                                    f"must name {hint}")
        codes = np.load(path)
        source = str(path)
    else:
        raise ValueError("generative retrieval needs semantic IDs: set data.sid_run (tokenizer run folder), "
                         "data.codes (a .npy file) or data.codes: kmeans")
    return validate_codes(codes, data.n_items, source), source


# ---- the catalogue as a prefix trie -----------------------------------------------------------------
class SemanticIdTrie:
    """The catalogue's code tuples as a prefix tree, level by level in CSR form, for batched lookups:
    `allowed(level, nodes)` masks the codes that continue a prefix to a real item, `child` follows one
    code. Level-0 has one node (the root); after the last level a child is an item index."""

    def __init__(self, codes: np.ndarray, item_scales: np.ndarray | None = None):
        tuples = np.asarray(codes, dtype=np.int64)[1:]
        n_items, self.n_levels = tuples.shape
        if item_scales is not None:
            item_scales = np.asarray(item_scales, dtype=np.float32)
            if item_scales.shape != (n_items + 1, self.n_levels):
                raise ValueError(f"item scales must be [n_items + 1, L] = {(n_items + 1, self.n_levels)}, "
                                 f"got {item_scales.shape}")
        # Token scales (ADA-SID's router downstream) are the mean over the items sharing the token's prefix
        # [proposal]: a function of the prefix alone, so decoding knows a generated token's scale before the
        # item is complete, and training (which sees the item) uses the very same value.
        self.edge_scale: list[torch.Tensor] | None = None
        self.item_token_scales: np.ndarray | None = None  # [n_items + 1, L] when the trie has scales
        if item_scales is not None:
            self.edge_scale = []
            self.item_token_scales = np.ones((n_items + 1, self.n_levels), dtype=np.float32)
        self.level_sizes = [int(s) for s in tuples.max(0) + 1]
        self.keys: list[torch.Tensor] = []  # sorted node * size + code of every edge
        self.ptr: list[torch.Tensor] = []  # node → its edges' range
        self.edge_codes: list[torch.Tensor] = []
        self.edge_next: list[torch.Tensor] = []  # next node (or item index after the last level)
        node, n_nodes = np.zeros(n_items, dtype=np.int64), 1
        for level, size in enumerate(self.level_sizes):
            keys, inverse = np.unique(node * size + tuples[:, level], return_inverse=True)
            inverse = inverse.ravel()
            ptr = np.zeros(n_nodes + 1, dtype=np.int64)
            ptr[1:] = np.cumsum(np.bincount(keys // size, minlength=n_nodes))
            if level == self.n_levels - 1:
                if len(keys) != n_items:
                    raise ValueError("items share a code tuple: the trie needs one tuple per item")
                nxt = np.empty(len(keys), dtype=np.int64)
                nxt[inverse] = np.arange(1, n_items + 1)
            else:
                nxt = np.arange(len(keys), dtype=np.int64)
                node, n_nodes = inverse, len(keys)
            if item_scales is not None:
                per_edge = (np.bincount(inverse, item_scales[1:, level], len(keys))
                            / np.maximum(np.bincount(inverse, minlength=len(keys)), 1)).astype(np.float32)
                self.edge_scale.append(torch.as_tensor(per_edge))
                self.item_token_scales[1:, level] = per_edge[inverse]
            self.keys.append(torch.as_tensor(keys))
            self.ptr.append(torch.as_tensor(ptr))
            self.edge_codes.append(torch.as_tensor(keys % size))
            self.edge_next.append(torch.as_tensor(nxt))
        self.device = torch.device("cpu")
        self._copies: dict[str, SemanticIdTrie] = {}

    def to(self, device: torch.device | str) -> SemanticIdTrie:
        """This trie with its tensors on `device` (made once per device, then reused)."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = str(device)
        if key not in self._copies:
            other = copy.copy(self)
            for name in ("keys", "ptr", "edge_codes", "edge_next", "edge_scale"):
                if getattr(self, name) is not None:
                    setattr(other, name, [t.to(device) for t in getattr(self, name)])
            other.device, other._copies = device, {}
            self._copies[key] = other
        return self._copies[key]

    def allowed(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """[N, size_level] True where the code continues node `nodes[i]` towards a real item."""
        nodes = nodes.reshape(-1)
        ptr = self.ptr[level]
        starts, counts = ptr[nodes], ptr[nodes + 1] - ptr[nodes]
        device = nodes.device
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=device), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        edges = torch.repeat_interleave(starts, counts) + torch.arange(len(rows), device=device) - first
        mask = torch.zeros(len(nodes), self.level_sizes[level], dtype=torch.bool, device=device)
        mask[rows, self.edge_codes[level][edges]] = True
        return mask

    def child(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The node (item index after the last level) reached from `nodes` by `codes`; only meaningful
        for allowed codes."""
        return self.edge_next[level][self._edge(level, nodes, codes)]

    def _edge(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        keys = self.keys[level]
        return torch.searchsorted(keys, nodes * self.level_sizes[level] + codes).clamp_(max=len(keys) - 1)

    def scale(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor | None:
        """The embedding scale of code `codes` after prefix node `nodes` (None when the trie has no scales)."""
        if self.edge_scale is None:
            return None
        return self.edge_scale[level][self._edge(level, nodes, codes)]


@torch.no_grad()
def constrained_beam_search(model, tokens: torch.Tensor, trie: SemanticIdTrie, beam_size: int,
                            scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top `beam_size` items per history (left-padded token rows [B, T]) by the model's log-probability
    of their code tuple, best first: (items [B, beam] with 0 where fewer items exist, scores).

    The tokens go to the model's device and the search runs there (with the trie moved along); the
    results stay on that device. `scales` [B, T]: the history tokens' embedding scales, when the trie
    has them (generated tokens take theirs from the trie)."""
    device = module_device(model) if isinstance(model, torch.nn.Module) else tokens.device
    if scales is None:
        log_probs, state = model.begin_decode(tokens.to(device))
    else:
        log_probs, state = model.begin_decode(tokens.to(device), scales.to(device))
    device = log_probs.device
    trie = trie.to(device)
    b = tokens.shape[0]
    nodes = torch.zeros(b, 1, dtype=torch.long, device=device)
    scores = torch.zeros(b, 1, device=device)
    log_probs = log_probs.unsqueeze(1)
    for level in range(trie.n_levels):
        size = trie.level_sizes[level]
        width = nodes.shape[1]
        allowed = trie.allowed(level, nodes).view(b, width, size)
        candidates = scores.unsqueeze(-1) + log_probs.masked_fill(~allowed, -torch.inf)
        scores, flat = candidates.view(b, -1).topk(min(beam_size, width * size), dim=1)
        parents, codes = flat // size, flat % size
        parent_nodes = nodes.gather(1, parents)
        nodes = trie.child(level, parent_nodes, codes)
        if level + 1 < trie.n_levels:
            code_scales = trie.scale(level, parent_nodes, codes)
            if code_scales is None:
                log_probs, state = model.extend_decode(state, parents, codes)
            else:
                log_probs, state = model.extend_decode(state, parents, codes, code_scales)
    items = nodes.masked_fill(torch.isinf(scores), 0)
    return items, scores


# ---- training batches -------------------------------------------------------------------------------
class SemanticIdBatches:
    """Shuffled batches of flattened token sequences: each training prefix is cut (from its end) into
    windows of `max_items + 1` items (`item_windows`) so every item but the first is a target once with up
    to `max_items` items of history; input = tokens[:-1], targets = tokens[1:] with the first item's
    tokens masked (0). Batches are formed from length-sorted chunks to waste little padding. With
    `item_scales` [n_items + 1, L] the batch also carries each input token's embedding scale."""

    def __init__(self, data: SequenceData, item_tokens: np.ndarray, max_items: int, batch_size: int,
                 sort_chunk: int = 50, windows_per_user: int = 0, item_scales: np.ndarray | None = None):
        self.n_levels = item_tokens.shape[1]
        self.item_tokens, self.item_scales = item_tokens, item_scales
        self.batch_size, self.sort_chunk = batch_size, sort_chunk
        self.windows = item_windows(data, max_items, windows_per_user)
        if not self.windows:
            raise ValueError("no training sequences: every user needs at least 4 items for leave-one-out")
        self.lengths = np.array([len(w) * self.n_levels - 1 for w in self.windows])

    def __len__(self) -> int:
        return (len(self.windows) + self.batch_size - 1) // self.batch_size

    def batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.windows))
        groups = []
        chunk = self.batch_size * self.sort_chunk
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            groups.extend(part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size))
        for g in rng.permutation(len(groups)):
            yield self._collate(groups[g])

    def _collate(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        width = int(self.lengths[rows].max())
        tokens = np.zeros((len(rows), width), dtype=np.int64)
        targets = np.zeros((len(rows), width), dtype=np.int64)
        scales = np.ones((len(rows), width), dtype=np.float32) if self.item_scales is not None else None
        for r, i in enumerate(rows):
            seq = self.item_tokens[self.windows[i]].ravel()
            n = len(seq) - 1
            tokens[r, width - n:] = seq[:-1]
            targets[r, width - n:] = seq[1:]
            targets[r, width - n:width - n + self.n_levels - 1] = 0  # the first item has no history
            if scales is not None:
                scales[r, width - n:] = self.item_scales[self.windows[i]].ravel()[:-1]
        batch = {"tokens": torch.from_numpy(tokens), "targets": torch.from_numpy(targets)}
        if scales is not None:
            batch["scales"] = torch.from_numpy(scales)
        return batch


POPULARITY_GROUPS = ("head", "torso", "tail")


def popularity_tertiles(counts: np.ndarray) -> np.ndarray:
    """Group per item index (0 head, 1 torso, 2 tail): the catalogue's items sorted by training count, most
    first, and cut into three groups of equal size (ties broken by item index). Index 0 is in no group (-1)."""
    counts = np.asarray(counts)
    order = np.argsort(-counts[1:], kind="stable") + 1
    groups = np.full(len(counts), -1, dtype=np.int64)
    for g, part in enumerate(np.array_split(order, 3)):
        groups[part] = g
    return groups


def load_router_weights(data_cfg: dict[str, Any], params: dict[str, Any], codes: np.ndarray
                        ) -> tuple[str | None, np.ndarray | None]:
    """ADA-SID's router weights for the code columns ([n_items + 1, L], suffix column = 1) from the tokenizer
    run's `router.npy`, or (None, None). `task_params.router_scales`: auto (default; use them when the run has
    them), true (require them), false (ignore them)."""
    path, router = load_router(data_cfg.get("sid_run"), params.get("router_scales", "auto"), codes,
                               "task_params.router_scales")
    if router is None:
        return None, None
    return path, np.concatenate([router, np.ones((len(router), 1), dtype=np.float32)], 1)


def sample_users(n_users: int, count: Any, seed: Any = 0) -> np.ndarray:
    """A sorted fixed sample of `count` user indices drawn with `seed` (every user when count is 0/None or
    not below n_users): the same users for every run with the same settings."""
    users = np.arange(n_users)
    count = int(count or 0)
    if 0 < count < n_users:
        users = np.sort(np.random.default_rng(int(seed or 0)).choice(users, count, False))
    return users


# ---- the task ---------------------------------------------------------------------------------------
@register_task("generative_retrieval")
class GenerativeRetrievalTask(Task):
    monitor = "ndcg@10"
    monitor_mode = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data = load_sequences(cfg.data)
        self.codes, self.codes_source = load_codes(cfg.data, self.data)
        params = cfg.task_params
        self.router_source, router = load_router_weights(cfg.data, params, self.codes)
        self.trie = SemanticIdTrie(self.codes, router)
        self.n_levels = self.codes.shape[1]
        self.max_items = int(cfg.data.get("max_items", 20))
        if self.max_items < 1:
            raise ValueError("data.max_items must be at least 1")
        offsets = 1 + np.r_[0, np.cumsum(self.trie.level_sizes)[:-1]]
        self.item_tokens = self.codes + offsets  # item index → its L token ids
        self.item_tokens[0] = 0
        self.item_scales = self.trie.item_token_scales
        self.beam_size = int(params.get("beam_size", 20))
        self.eval_batch_size = int(params.get("eval_batch_size", 256))
        if self.beam_size < max(METRIC_KS):
            raise ValueError(f"task_params.beam_size must be at least {max(METRIC_KS)} for Recall/NDCG@10")
        self.valid_users = sample_users(self.data.n_users, params.get("valid_users", 3000), params.get("valid_seed", 0))
        self.loader = SemanticIdBatches(self.data, self.item_tokens, self.max_items, cfg.train.batch_size,
                                        windows_per_user=int(cfg.data.get("windows_per_user", 0)),
                                        item_scales=self.item_scales)
        self.popularity_group = popularity_tertiles(self.data.item_counts("train"))
        self.decode_seconds: dict[str, float] = {}
        self.last_ranks: dict[str, np.ndarray] = {}

    def build_model(self):
        return build_model(self.cfg.model, self.cfg.model_params, level_sizes=self.trie.level_sizes,
                           max_items=self.max_items)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_batches(self, rng: np.random.Generator):
        return self.loader.batches(rng)

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int((batch["targets"] > 0).sum()) // self.n_levels  # samples = predicted items

    def history_tokens(self, histories: list[np.ndarray]) -> torch.Tensor:
        """The last `max_items` items of each history as left-padded token rows [B, items * L]."""
        return self.history_inputs(histories)[0]

    def history_inputs(self, histories: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(`history_tokens`, their embedding scales [B, items * L] or None without router weights)."""
        width = max(min(len(h), self.max_items) for h in histories) * self.n_levels
        out = np.zeros((len(histories), width), dtype=np.int64)
        scales = np.ones((len(histories), width), dtype=np.float32) if self.item_scales is not None else None
        for row, items in enumerate(histories):
            recent = np.asarray(items[-self.max_items:], dtype=np.int64)
            flat = self.item_tokens[recent].ravel()
            out[row, width - len(flat):] = flat
            if scales is not None:
                scales[row, width - len(flat):] = self.item_scales[recent].ravel()
        return torch.from_numpy(out), None if scales is None else torch.from_numpy(scales)

    @torch.no_grad()
    def retrieve(self, model, histories: list[np.ndarray], beam_size: int | None = None) -> torch.Tensor:
        """Beam-search items [n, beam] (best first, 0 = none) for each history; batches users of
        similar history length together."""
        beam = beam_size or self.beam_size
        lengths = np.array([min(len(h), self.max_items) for h in histories])
        order = np.argsort(lengths, kind="stable")
        out = torch.zeros(len(histories), beam, dtype=torch.long)
        for start in range(0, len(order), self.eval_batch_size):
            rows = order[start:start + self.eval_batch_size]
            tokens, scales = self.history_inputs([histories[r] for r in rows])
            items, _ = constrained_beam_search(model, tokens, self.trie, beam, scales)
            out[torch.as_tensor(rows), :items.shape[1]] = items.cpu()
        return out

    def evaluate(self, model, split: str) -> dict[str, float]:
        histories, targets = split_inputs(self.data, split)
        users = self.valid_users if split == "valid" else np.arange(len(histories))
        started = time.perf_counter()
        items = self.retrieve(model, [histories[u] for u in users])
        self.decode_seconds[split] = round(time.perf_counter() - started, 2)
        hits = items == torch.as_tensor(targets[users]).view(-1, 1)
        ranks = torch.where(hits.any(1), hits.int().argmax(1), torch.tensor(-1)).numpy()
        self.last_ranks[split] = ranks  # per-user ranks: paired comparisons between runs
        out = ranking_metrics(ranks, METRIC_KS)
        groups = self.popularity_group[targets[users]]
        for g, name in enumerate(POPULARITY_GROUPS):
            mine = groups == g
            out[f"recall@10_{name}"] = float(((ranks[mine] >= 0) & (ranks[mine] < 10)).mean()) if mine.any() else 0.0
            out[f"users_{name}"] = int(mine.sum())
        return out

    def recommend(self, model, history_items: list[int], k: int) -> list[int]:
        """The top `k` item indices (best first, every one a real item) to follow `history_items`."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(history_items, str | bytes) or not hasattr(history_items, "__len__"):
            raise ValueError(f"history_items must be a list of item indices, got {type(history_items).__name__}")
        if len(history_items) == 0:
            raise ValueError("history_items is empty: generative retrieval needs at least one item the user "
                             "interacted with")
        for item in history_items:
            if isinstance(item, bool) or not isinstance(item, int | np.integer):
                raise ValueError(f"item {item!r} is not an integer item index")
            if not 1 <= item <= self.data.n_items:
                raise ValueError(f"unknown item index {item}: items are 1..{self.data.n_items}")
        was_training = model.training
        model.eval()
        try:
            items = self.retrieve(model, [np.asarray(history_items, dtype=np.int64)], max(k, self.beam_size))
        finally:
            model.train(was_training)
        return [int(i) for i in items[0, :k] if i > 0]

    def on_train_end(self, model, run_dir: Path) -> dict[str, Any]:
        np.save(Path(run_dir) / "codes.npy", self.codes)
        if "test" in self.last_ranks:
            np.save(Path(run_dir) / "test_ranks.npy", self.last_ranks["test"])
            _, test_targets = split_inputs(self.data, "test")
            np.save(Path(run_dir) / "test_groups.npy", self.popularity_group[test_targets])
        if self.cfg.data.get("sid_run"):
            metrics = Path(self.cfg.data["sid_run"]) / "metrics.json"
            if metrics.exists():
                shutil.copy(metrics, Path(run_dir) / "sid_metrics.json")
        return {"sid": {"source": self.codes_source, "level_sizes": self.trie.level_sizes,
                        "router_scales": self.router_source,
                        **codebook_stats(self.codes[1:], self.trie.level_sizes)},
                "decode_seconds": dict(self.decode_seconds)}
