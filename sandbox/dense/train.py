"""Contrastive training of the dense encoder on pseudo-queries written from catalogue products.

Data [proposal]: the sandbox has no query log, so each step writes a fresh pseudo-query for every
product of the batch from the product itself: a few of its title words (a span or a sample, in
order or shuffled, some dropped), sometimes an attribute value, the brand or a category word, and
sometimes generic shopping talk ("i need", "for my", "please": `CHATTER`) that the query tower must
learn to ignore. Products are drawn from the generated part of the catalogue
(`ShoppingWorld.filler_products`), from `filler_start` on: never a task's gold product or decoy, and
by default past the products the rewrite data's queries (generated products 0..~2,000) and the
task generator's default pool (0..20,000) are written from, so no evaluation query's gold product
is ever a training product. Extra (query, product id) pairs can be added from a JSONL file.

Loss: in-batch softmax both ways (query → product and product → query) at a fixed temperature,
the standard two-tower recipe. The last `n_val` products are a validation split with fixed
pseudo-queries: validation loss and recall@10 (among the split's products) are reported every
epoch, and training stops when validation loss has not improved for `patience` epochs; the best
epoch's weights are kept. Everything is seeded; one torch thread by default (shared CPUs).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.dense.encoder import DenseEncoder, EncoderConfig, product_text
from sandbox.engines.base import analyze

CHATTER = ("i", "need", "want", "looking", "for", "a", "the", "my", "please", "find", "me", "show", "buy", "some",
           "good", "can", "you", "help", "with", "that", "is", "any", "hi", "hello", "to", "get", "would", "like",
           "something", "pls", "new", "best", "nice")
MAX_PAIRS = 200_000  # extra (query, product) pairs read from a file, at most


@dataclass
class DenseTrainConfig:
    n_products: int = 100_000     # generated products to train on (fewer when the sandbox has fewer)
    n_val: int = 2_000            # of them, held out for validation
    filler_start: int = 20_000    # first generated product used (see the module docstring)
    batch_size: int = 1024
    max_epochs: int = 4
    patience: int = 1
    temperature: float = 0.05
    lr_embedding: float = 0.01
    lr_projection: float = 0.002
    seed: int = 0
    threads: int = 1
    pairs_file: str | None = None  # JSONL of {"query": ..., "product_id": ...}: extra training pairs

    def check(self) -> None:
        if self.n_products < 2 * max(self.n_val, 1) or self.n_val < 16:
            raise ValueError("n_products must be at least twice n_val, and n_val at least 16")
        if not 16 <= self.batch_size <= 8192:
            raise ValueError("batch_size must be between 16 and 8192")
        if not 1 <= self.max_epochs <= 100:
            raise ValueError("max_epochs must be between 1 and 100")
        if not 0.001 <= self.temperature <= 1.0:
            raise ValueError("temperature must be between 0.001 and 1")


def _words(text: str) -> list[str]:
    return [w for w in analyze(text) if not w.isdigit()]


def pseudo_query(product: dict[str, Any], rng: random.Random) -> str:
    """One query a shopper might type for `product`, written from its own text (see the module docstring)."""
    title = list(dict.fromkeys(_words(product.get("title", ""))))
    parts: list[str] = []
    if title:
        n = rng.randint(1, min(5, len(title)))
        if rng.random() < 0.5:
            start = rng.randrange(len(title) - n + 1)
            picked = title[start:start + n]
        else:
            idx = sorted(rng.sample(range(len(title)), n))
            picked = [title[i] for i in idx]
        if len(picked) > 2 and rng.random() < 0.3:
            del picked[rng.randrange(len(picked))]
        parts.extend(picked)
    values = [v for vals in (product.get("attributes") or {}).values() for v in vals if v]
    values += [v for opt in (product.get("sku_options") or {}).values() for v in opt.values() if v]
    if values and rng.random() < 0.35:
        parts.extend(_words(rng.choice(values))[:3])
    if product.get("brand") and rng.random() < 0.2:
        parts.extend(_words(product["brand"])[:2])
    category = _words(str(product.get("category", "")).split(">")[-1])
    if category and rng.random() < 0.25:
        parts.append(rng.choice(category))
    if rng.random() < 0.5:
        rng.shuffle(parts)
    if rng.random() < 0.35:
        chat = rng.sample(CHATTER, rng.randint(1, 4))
        cut = rng.randint(0, len(chat))
        parts = chat[:cut] + parts + chat[cut:]
    return " ".join(parts) or (title[0] if title else "product")


def read_pairs(path: str | Path, lookup: Callable[[Sequence[str]], dict[str, dict[str, Any]]]
               ) -> list[tuple[str, dict[str, Any]]]:
    """(query, product) pairs of a JSONL file of {"query", "product_id"}; unknown ids are skipped."""
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                q, pid = str(raw["query"])[:500], str(raw["product_id"])[:40]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{i}: expected {{\"query\": ..., \"product_id\": ...}} ({exc})") from None
            rows.append((q, pid))
            if len(rows) >= MAX_PAIRS:
                break
    found = lookup([pid for _, pid in rows])
    return [(q, found[pid]) for q, pid in rows if pid in found]


class _Towers:
    """The torch view of a DenseEncoder's weights (shared embedding bag, two projections)."""

    def __init__(self, enc: DenseEncoder):
        import torch

        cfg = enc.cfg
        self.bag = torch.nn.EmbeddingBag(cfg.buckets, cfg.dim, mode="sum", sparse=True)
        self.q = torch.nn.Linear(cfg.dim, cfg.dim)
        self.p = torch.nn.Linear(cfg.dim, cfg.dim)
        with torch.no_grad():
            self.bag.weight.copy_(torch.from_numpy(enc.weights["embedding"]))
            self.q.weight.copy_(torch.from_numpy(enc.weights["q_proj"]))
            self.q.bias.copy_(torch.from_numpy(enc.weights["q_bias"]))
            self.p.weight.copy_(torch.from_numpy(enc.weights["p_proj"]))
            self.p.bias.copy_(torch.from_numpy(enc.weights["p_bias"]))

    def encode(self, enc: DenseEncoder, texts: Sequence[str], tower: str):
        import torch

        ids, offsets = enc.featurizer.featurize(texts)
        bags = self.bag(torch.from_numpy(ids), torch.from_numpy(offsets))
        proj = self.q if tower == "q" else self.p
        return torch.nn.functional.normalize(proj(bags), dim=1, eps=1e-6)

    def weights(self) -> dict[str, np.ndarray]:
        return {"embedding": self.bag.weight.detach().numpy().copy(),
                "q_proj": self.q.weight.detach().numpy().copy(), "q_bias": self.q.bias.detach().numpy().copy(),
                "p_proj": self.p.weight.detach().numpy().copy(), "p_bias": self.p.bias.detach().numpy().copy()}


def evaluate(enc: DenseEncoder, queries: Sequence[str], products: Sequence[dict[str, Any]], temperature: float = 0.05
             ) -> dict[str, float]:
    """Softmax loss of each query over all `products` and recall@1/@10 of its own product among them."""
    q = enc.encode_texts(list(queries), "q")
    p = enc.encode_products(list(products))
    sims = q @ p.T
    own = np.diag(sims)
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = first
    logits = sims / temperature
    logits -= logits.max(axis=1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits)))
    return {"loss": round(loss, 4), "recall@1": round(float(np.mean(rank < 1)), 4),
            "recall@10": round(float(np.mean(rank < 10)), 4)}


def train_encoder(products: Sequence[dict[str, Any]], cfg: DenseTrainConfig | None = None,
                  enc_cfg: EncoderConfig | None = None, extra_pairs: Sequence[tuple[str, dict[str, Any]]] = (),
                  log: Callable[[str], None] | None = None, progress: bool = False) -> DenseEncoder:
    """Train a DenseEncoder on pseudo-queries of `products` (+ `extra_pairs`); returns the best epoch's."""
    import torch
    from tqdm import tqdm

    cfg = cfg or DenseTrainConfig()
    enc_cfg = enc_cfg or EncoderConfig()
    n_val = min(cfg.n_val, max(16, len(products) // 10))
    if len(products) < 2 * n_val:
        raise ValueError(f"{len(products)} products are too few to train the dense encoder (need {2 * n_val})")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    try:
        enc = DenseEncoder(enc_cfg, seed=cfg.seed)
        train, val = list(products[:-n_val]), list(products[-n_val:])
        val_rng = random.Random(f"{cfg.seed}:dense-val")
        val_queries = [pseudo_query(p, val_rng) for p in val]
        before = evaluate(enc, val_queries, val, cfg.temperature)
        towers = _Towers(enc)
        opt_sparse = torch.optim.SparseAdam(list(towers.bag.parameters()), lr=cfg.lr_embedding)
        opt_dense = torch.optim.Adam([*towers.q.parameters(), *towers.p.parameters()], lr=cfg.lr_projection)
        items: list[tuple[str | None, dict[str, Any]]] = [(None, p) for p in train] + list(extra_pairs)
        history: list[dict[str, Any]] = []
        best: tuple[float, dict[str, np.ndarray]] | None = None
        stale = 0
        steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
        for epoch in range(1, cfg.max_epochs + 1):
            rng = random.Random(f"{cfg.seed}:dense-epoch:{epoch}")
            order = list(range(len(items)))
            rng.shuffle(order)
            losses = []
            for s in tqdm(range(steps_per_epoch), desc=f"dense encoder epoch {epoch}", unit="step",
                          disable=not progress, mininterval=1.0, leave=False):
                batch = [items[i] for i in order[s * cfg.batch_size:(s + 1) * cfg.batch_size]]
                if len(batch) < 2:
                    continue
                qs = [q if q is not None else pseudo_query(p, rng) for q, p in batch]
                qv = towers.encode(enc, qs, "q")
                pv = towers.encode(enc, [product_text(p) for _, p in batch], "p")
                logits = qv @ pv.T / cfg.temperature
                target = torch.arange(len(batch))
                loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                              + torch.nn.functional.cross_entropy(logits.T, target))
                opt_sparse.zero_grad()
                opt_dense.zero_grad()
                loss.backward()
                opt_sparse.step()
                opt_dense.step()
                losses.append(float(loss.detach()))
            enc.weights = towers.weights()
            val_scores = evaluate(enc, val_queries, val, cfg.temperature)
            row = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 4), **{f"val_{k}": v for k, v in
                                                                                      val_scores.items()},
                   "seconds": round(time.perf_counter() - started, 1)}
            history.append(row)
            if log:
                log(json.dumps(row))
            if best is None or val_scores["loss"] < best[0] - 1e-4:
                best, stale = (val_scores["loss"], enc.weights), 0
            else:
                stale += 1
                if stale > cfg.patience:
                    break
        assert best is not None
        enc.weights = best[1]
        enc.meta = {"train": asdict(cfg), "n_train_products": len(train), "n_val_products": len(val),
                    "n_extra_pairs": len(extra_pairs), "untrained_val": before, "history": history,
                    "best_val_loss": best[0], "train_seconds": round(time.perf_counter() - started, 1)}
        return enc
    finally:
        torch.set_num_threads(threads)
