"""Item indexes for embedding-based retrieval: exact and approximate maximum inner-product search.

faiss (faiss-cpu) is the library: one well-kept package gives the exact baseline (`IndexFlatIP`, a
brute-force scan, the ground truth) and the approximate index (`IndexHNSWFlat` with inner product, graph
search whose cost grows ~log N), both with id filters inside the search, on CPU and GPU builds alike.
Padding (item 0) is never indexed: rows are items 1..N and results come back as item indices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

INDEX_KINDS = ("exact", "hnsw")


@dataclass
class ItemIndex:
    """Items 1..N of a [N + 1, d] vector table in a faiss inner-product index."""

    index: faiss.Index
    kind: str
    build_seconds: float

    @classmethod
    def build(cls, item_vectors: np.ndarray, kind: str = "exact", hnsw_m: int = 32, ef_construction: int = 80,
              ef_search: int = 64) -> ItemIndex:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, not {kind!r}")
        vectors = np.ascontiguousarray(item_vectors[1:], dtype=np.float32)
        started = time.perf_counter()
        if kind == "exact":
            index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        index.add(vectors)
        return cls(index, kind, time.perf_counter() - started)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], item indices [Q, k]); a slot the index could not fill has item index 0."""
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, np.where(rows >= 0, rows + 1, 0)


def ranks_in_results(results: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its result row; `results.shape[1]` (a miss) when absent."""
    hit = results == np.asarray(targets)[:, None]
    return np.where(hit.any(1), hit.argmax(1), results.shape[1])


def overlap_at_k(approximate: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the approximate top-k also returns (the ANN's recall@k)."""
    found = [len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approximate, exact, strict=True)]
    return float(np.mean(found)) if found else 0.0
