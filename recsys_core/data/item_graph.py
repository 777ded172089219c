"""A homogeneous item graph from behaviour logs, and the inverted tables that serve item-to-item retrieval.

Nodes are items; an edge joins two items the same user clicked within `window` clicks of each other
(clicks of one shopper across sessions: the collaborative signal of a click graph, folded onto items).
A click followed by a purchase is a stronger behaviour: an edge touching an item the user bought weighs
`purchase_weight` instead of 1. Only training prefixes build the graph (every user's last two clicks are
the validation and test targets), so evaluation never sees its own edges.

An *inverted table* is what offline-to-online serving stores: for every item (a trigger), its top-K
neighbours and their scores. Online, a user's recent clicks are looked up and their rows merged; no model
runs at query time (GCL-MO's serving path, and the item-CF baseline's when the table comes from the graph).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch


def co_click_graph(prefixes: Sequence[np.ndarray], n_items: int, window: int = 3,
                   purchased: Sequence[set[int]] | None = None, purchase_weight: float = 2.0,
                   max_neighbours: int = 20) -> sp.csr_matrix:
    """Symmetric weighted item graph [n_items + 1]² (row/column 0, padding, empty; no self loops), each row
    pruned to its `max_neighbours` heaviest edges (then symmetrised again, so a kept edge is kept both ways)."""
    if window < 1:
        raise ValueError("window must be at least 1")
    rows, cols, vals = [], [], []
    for u, seq in enumerate(prefixes):
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        bought = purchased[u] if purchased is not None else set()
        heavy = np.array([i in bought for i in seq]) if bought else np.zeros(len(seq), dtype=bool)
        for lag in range(1, min(window, len(seq) - 1) + 1):
            a, b = seq[:-lag], seq[lag:]
            w = np.where(heavy[:-lag] | heavy[lag:], purchase_weight, 1.0)
            keep = a != b
            rows.append(a[keep])
            cols.append(b[keep])
            vals.append(w[keep])
    if not rows:
        return sp.csr_matrix((n_items + 1, n_items + 1), dtype=np.float32)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    graph = sp.coo_matrix((np.concatenate([v, v]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                          shape=(n_items + 1, n_items + 1), dtype=np.float32).tocsr()
    graph.sum_duplicates()
    if max_neighbours > 0:
        graph = _top_per_row(graph, max_neighbours)
        graph = graph.maximum(graph.T).tocsr()
    return graph


def _top_per_row(graph: sp.csr_matrix, k: int) -> sp.csr_matrix:
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    keep = np.zeros(len(data), dtype=bool)
    for row in range(graph.shape[0]):
        lo, hi = indptr[row], indptr[row + 1]
        if hi - lo <= k:
            keep[lo:hi] = True
        else:
            keep[lo + np.argpartition(-data[lo:hi], k)[:k]] = True
    pruned = sp.csr_matrix((data * keep, indices, indptr), shape=graph.shape)
    pruned.eliminate_zeros()
    return pruned


def normalized_adjacency(graph: sp.csr_matrix) -> torch.Tensor:
    """D^-1/2 A D^-1/2 as a torch sparse tensor (LightGCN's propagation matrix; isolated nodes stay 0)."""
    degree = np.asarray(graph.sum(1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    norm = sp.diags(inv_sqrt) @ graph @ sp.diags(inv_sqrt)
    coo = norm.tocoo()
    index = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    return torch.sparse_coo_tensor(index, torch.as_tensor(coo.data, dtype=torch.float32), coo.shape,
                                   check_invariants=True).coalesce()


@dataclass
class InvertedTable:
    """Every item's top-K neighbours [n_items + 1, K] (0 = empty slot) and their scores."""

    neighbours: np.ndarray
    scores: np.ndarray
    build_seconds: float = 0.0

    @classmethod
    def from_vectors(cls, item_vectors: np.ndarray, k: int) -> InvertedTable:
        """Top-K inner-product neighbours of every item (itself excluded), by an exact faiss scan: the
        offline job that turns learned embeddings into the table served online."""
        from recsys_core.index import ItemIndex

        started = time.perf_counter()
        index = ItemIndex.build(item_vectors, "exact")
        scores, found = index.search(item_vectors[1:], k + 1)
        own = found == np.arange(1, len(item_vectors))[:, None]
        # drop the item itself (or the last slot when the item is not first: equal vectors)
        drop = np.where(own.any(1), own.argmax(1), k)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(len(found)), drop] = False
        neighbours = np.zeros((len(item_vectors), k), dtype=np.int64)
        table_scores = np.zeros((len(item_vectors), k), dtype=np.float32)
        neighbours[1:] = found[keep].reshape(len(found), k)
        table_scores[1:] = scores[keep].reshape(len(found), k)
        table_scores[neighbours == 0] = 0.0
        return cls(neighbours, table_scores, time.perf_counter() - started)

    @classmethod
    def from_graph(cls, graph: sp.csr_matrix, k: int) -> InvertedTable:
        """Each item's `k` heaviest graph neighbours, scored by the normalised edge weight (item-CF)."""
        started = time.perf_counter()
        n = graph.shape[0]
        neighbours = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float32)
        degree = np.asarray(graph.sum(1)).ravel()
        for row in range(1, n):
            lo, hi = graph.indptr[row], graph.indptr[row + 1]
            if hi == lo:
                continue
            cols, w = graph.indices[lo:hi], graph.data[lo:hi] / np.sqrt(degree[row] * degree[graph.indices[lo:hi]])
            order = np.argsort(-w, kind="stable")[:k]
            neighbours[row, :len(order)], scores[row, :len(order)] = cols[order], w[order]
        return cls(neighbours, scores, time.perf_counter() - started)

    @property
    def k(self) -> int:
        return self.neighbours.shape[1]

    @property
    def megabytes(self) -> float:
        return (self.neighbours.nbytes + self.scores.nbytes) / 2**20

    def retrieve(self, triggers: Sequence[np.ndarray], depth: int, decay: float = 0.7) -> np.ndarray:
        """[len(triggers), depth] items for each user's trigger list (most recent last): the union of the
        triggers' rows, an item scored by the sum over triggers of decay^age × its table score; the
        triggers themselves are not returned (the user has just seen them). Empty slots are 0."""
        out = np.zeros((len(triggers), depth), dtype=np.int64)
        for u, trig in enumerate(triggers):
            trig = np.asarray(trig, dtype=np.int64)
            trig = trig[trig > 0]
            if not len(trig):
                continue
            ages = np.arange(len(trig))[::-1]
            items = self.neighbours[trig].ravel()
            weights = (self.scores[trig] * (decay ** ages)[:, None]).ravel()
            valid = (items > 0) & ~np.isin(items, trig)
            if not valid.any():
                continue
            uniq, inverse = np.unique(items[valid], return_inverse=True)
            total = np.bincount(inverse, weights=weights[valid])
            best = uniq[np.argsort(-total, kind="stable")[:depth]]
            out[u, :len(best)] = best
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(path, neighbours=self.neighbours, scores=self.scores)
        return path

    @classmethod
    def load(cls, path: str | Path) -> InvertedTable:
        raw = np.load(path)
        return cls(raw["neighbours"], raw["scores"])
