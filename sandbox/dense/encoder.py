"""The dense retrieval encoder: a hashed bag of words and word pairs, two small towers.

Why this model [proposal]: the catalogue is millions of products and the sandbox runs on CPUs, so
the product tower must encode 2.5M products in a minute or two on one core, and the query tower
must embed one query in well under a millisecond inside `find_product`. A transformer does
neither. Hashed unigrams, adjacent-word bigrams and character trigrams of the platform's own
tokens (`sandbox.engines.base.analyze`, the tokens BM25 sees) summed by an `EmbeddingBag`
give what lexical search lacks, for a few microseconds a product: word order does not matter,
a word the product lacks can still pull towards it (words that co-occur in the catalogue learn
nearby vectors), and character trigrams tie inflections ("shoe"/"shoes"). The two towers share
the embedding table (a word means the same in a query and in a title) and each has its own
projection (queries are short and chatty; products are long and listy). Vectors are
L2-normalised, so inner product is cosine similarity (what faiss' inner-product indexes rank by).

Width [proposal]: 128. On the 200k sandbox, tuned on the rewrite data's *training* queries (never the
held-out ones), recall@10 of the gold among all products was 0.19 at 64 dims, 0.29 at 128 and 0.33
at 256: the generated catalogue recombines a few thousand words at random, so telling 200k titles
apart takes capacity. 256 doubles memory (2.5 GB of vectors at 2.5M) and HNSW build time for +4 points.

Hashing is crc32 of each token (deterministic across processes, unlike Python's `hash`), cached
per distinct token: a catalogue has a few thousand distinct words, so featurising a batch is
array arithmetic over token ids (`featurize`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.engines.base import analyze, searchable_raw_text

ENCODER_FORMAT = 1
MAX_TEXT_TOKENS = 96  # a product's text beyond this is not read (titles + attributes fit; bounded input)
MAX_VOCAB = 2_000_000  # distinct tokens cached; past it tokens are hashed without the cache
_BIGRAM_MUL = np.int64(0x9E3779B1)


@dataclass
class EncoderConfig:
    buckets: int = 1 << 18       # hashed feature rows of the shared embedding table
    dim: int = 128               # embedding width (also the output width); see the note below
    trigrams: bool = True        # character trigrams of each token ("#sh", "sho", "hoe", "oes", "es#")
    bigrams: bool = True         # adjacent-token pairs
    max_tokens: int = MAX_TEXT_TOKENS

    def check(self) -> None:
        if not (1 << 10) <= self.buckets <= (1 << 22):
            raise ValueError(f"buckets must be between 1024 and 4194304, got {self.buckets}")
        if not 8 <= self.dim <= 512:
            raise ValueError(f"dim must be between 8 and 512, got {self.dim}")
        if not 1 <= self.max_tokens <= 512:
            raise ValueError(f"max_tokens must be between 1 and 512, got {self.max_tokens}")


def product_text(product: dict[str, Any]) -> str:
    """What the product tower reads: the text BM25 indexes (title, SKU and attribute values, brand, category)."""
    return searchable_raw_text(product)


class Featurizer:
    """Text → hashed feature ids, batched: (flat ids, offsets) as `EmbeddingBag` takes them."""

    def __init__(self, cfg: EncoderConfig):
        self.cfg = cfg
        self._vocab: dict[str, int] = {}
        self._uni: list[int] = []          # token id -> unigram bucket
        self._tri: list[np.ndarray] = []   # token id -> trigram buckets
        self._uni_arr = np.zeros(0, dtype=np.int64)
        self._tri_flat = np.zeros(0, dtype=np.int64)
        self._tri_start = np.zeros(0, dtype=np.int64)
        self._tri_len = np.zeros(0, dtype=np.int64)
        self._dirty = False

    def _hash(self, s: str) -> int:
        return zlib.crc32(s.encode("utf-8")) % self.cfg.buckets

    def _token_id(self, token: str) -> int:
        tid = self._vocab.get(token)
        if tid is None:
            tid = len(self._uni)
            self._vocab[token] = tid
            self._uni.append(self._hash("w:" + token))
            if self.cfg.trigrams:
                padded = f"#{token}#"
                tris = [self._hash("c:" + padded[i:i + 3]) for i in range(max(1, len(padded) - 2))]
            else:
                tris = []
            self._tri.append(np.asarray(tris, dtype=np.int64))
            self._dirty = True
        return tid

    def _refresh(self) -> None:
        if not self._dirty:
            return
        self._uni_arr = np.asarray(self._uni, dtype=np.int64)
        lens = np.fromiter((len(t) for t in self._tri), dtype=np.int64, count=len(self._tri))
        self._tri_len = lens
        self._tri_start = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if len(lens) else lens
        self._tri_flat = np.concatenate(self._tri) if self._tri else np.zeros(0, dtype=np.int64)
        self._dirty = False

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, which text each belongs to), at most `max_tokens` tokens a text."""
        if len(self._vocab) >= MAX_VOCAB:  # bounded memory: start over (token ids are only batch-local)
            self._vocab.clear()
            self._uni.clear()
            self._tri.clear()
            self._dirty = True
        ids: list[int] = []
        owner: list[int] = []
        cap = self.cfg.max_tokens
        for i, text in enumerate(texts):
            toks = analyze(text)[:cap]
            ids.extend(self._token_id(t) for t in toks)
            owner.extend([i] * len(toks))
        self._refresh()
        return np.asarray(ids, dtype=np.int64), np.asarray(owner, dtype=np.int64)

    def featurize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat feature ids, offsets) for `len(texts)` bags; an empty text is an empty bag (a zero vector)."""
        tok, owner = self.token_ids(texts)
        parts_ids = [self._uni_arr[tok]]
        parts_owner = [owner]
        if self.cfg.bigrams and len(tok) > 1:
            same = owner[1:] == owner[:-1]
            a = self._uni_arr[tok[:-1][same]]
            b = self._uni_arr[tok[1:][same]]
            parts_ids.append(((a * _BIGRAM_MUL) ^ (b + 7)) % self.cfg.buckets)
            parts_owner.append(owner[1:][same])
        if self.cfg.trigrams and len(tok):
            lens = self._tri_len[tok]
            total = int(lens.sum())
            if total:
                starts = np.repeat(self._tri_start[tok], lens)
                within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
                parts_ids.append(self._tri_flat[starts + within])
                parts_owner.append(np.repeat(owner, lens))
        ids = np.concatenate(parts_ids)
        own = np.concatenate(parts_owner)
        order = np.argsort(own, kind="stable")
        ids = ids[order]
        counts = np.bincount(own, minlength=len(texts))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return ids.astype(np.int64), offsets


class DenseEncoder:
    """The two towers' weights as numpy arrays: query embedding at search time needs no torch.

    `embedding` (buckets × dim) is shared; `q_proj`/`p_proj` (dim × dim) and biases are the towers'
    own. Training (`sandbox.dense.train`) wraps the same arrays in torch modules."""

    def __init__(self, cfg: EncoderConfig, weights: dict[str, np.ndarray] | None = None, seed: int = 0,
                 meta: dict[str, Any] | None = None):
        cfg.check()
        self.cfg = cfg
        self.meta = meta or {}
        if weights is None:
            rng = np.random.default_rng(seed)
            weights = {
                "embedding": (rng.standard_normal((cfg.buckets, cfg.dim)) * 0.1).astype(np.float32),
                "q_proj": np.eye(cfg.dim, dtype=np.float32), "q_bias": np.zeros(cfg.dim, np.float32),
                "p_proj": np.eye(cfg.dim, dtype=np.float32), "p_bias": np.zeros(cfg.dim, np.float32),
            }
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.featurizer = Featurizer(cfg)

    # -- encoding ----------------------------------------------------------------------------
    def _bags(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        import torch

        emb = torch.from_numpy(self.weights["embedding"])
        with torch.inference_mode():
            out = torch.nn.functional.embedding_bag(torch.from_numpy(ids), emb, torch.from_numpy(offsets), mode="sum")
        return out.numpy()

    def _project(self, bags: np.ndarray, tower: str) -> np.ndarray:
        out = bags @ self.weights[f"{tower}_proj"].T + self.weights[f"{tower}_bias"]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-6)).astype(np.float32)

    def encode_products(self, products: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.encode_texts([product_text(p) for p in products], "p")

    def encode_texts(self, texts: Sequence[str], tower: str) -> np.ndarray:
        """L2-normalised vectors (n × dim) of texts through the query ("q") or product ("p") tower."""
        if tower not in ("q", "p"):
            raise ValueError("tower must be 'q' or 'p'")
        if not texts:
            return np.zeros((0, self.cfg.dim), np.float32)
        ids, offsets = self.featurizer.featurize(texts)
        if len(texts) <= 4:  # one query: a numpy gather-sum beats torch's call overhead
            emb = self.weights["embedding"]
            bounds = list(offsets) + [len(ids)]
            bags = np.stack([emb[ids[bounds[i]:bounds[i + 1]]].sum(axis=0) for i in range(len(texts))])
        else:
            bags = self._bags(ids, offsets)
        return self._project(bags, tower)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode_texts([text], "q")[0]

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """`encoder.safetensors` (the weights) and `encoder.json` (the config and training report)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.weights, str(folder / "encoder.safetensors"))
        (folder / "encoder.json").write_text(json.dumps(
            {"format": ENCODER_FORMAT, "config": asdict(self.cfg), "meta": self.meta}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> DenseEncoder:
        from safetensors.numpy import load_file

        folder = Path(folder)
        raw = json.loads((folder / "encoder.json").read_text())
        if raw.get("format") != ENCODER_FORMAT:
            raise ValueError(f"{folder}/encoder.json has format {raw.get('format')!r}; this code reads "
                             f"{ENCODER_FORMAT}: rebuild the dense index")
        cfg = EncoderConfig(**raw["config"])
        return cls(cfg, load_file(str(folder / "encoder.safetensors")), meta=raw.get("meta") or {})
