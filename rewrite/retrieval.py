"""Offline feedback through the sandbox's retrieval: relevance, increment and hitrate of a rewrite.

Definitions (BEQUE gives the three names but not their formulas; these are the proxies this
project uses, see docs/rewrite.md):
- relevance(q') : mean over the top `relevance_k` products retrieved by q' alone of
  0.5 * cos(emb(q), emb(title)) + 0.5 * share of q's price/service wishes the product meets
  (just the cosine when q states none).
- increment(q') : products in the top `increment_k` of q' that q's own top `depth` lacks and whose
  title is relevant to q (cosine >= `relevant_cosine`).
- hit@k        : the gold product is in the top k of the deployed list (q and q' fused, see
  `sandbox.rewrite_stage`); `hit_gain` = 1/log2(1 + rank) of the gold there, 0 past `depth`.
- fact words of q : its content words (`rewrite.rules.content_words`), price and service phrases left
  out, that some product holds but at most
  `fact_share` of the catalogue does (a brand, a model, a size, an uncommon attribute: the words that carry
  what the shopper asked about). `fact_dropped` = share of them a rewrite leaves out. [proposal]
reward = w_hit * hit_gain + w_relevance * relevance + w_increment * increment / increment_k
         - w_fact * fact_dropped.
The last term (0 by default) is the partial order that keeps the query's fact words: BEQUE ranks rewrites by
relevance, increment and hitrate only, and every rewriter trained that way dropped the words a web task's
answer hangs on (docs/results.md). [proposal]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rewrite.longtail import LongTailQuery
from rewrite.rules import content_words, strip_constraints
from sandbox import ShoppingWorld, query_terms
from sandbox.engines.base import SearchRequest
from sandbox.rewrite_stage import fuse_with_original
from sandbox.scorer import EmbeddingTitleSimilarity


@dataclass
class RewardWeights:
    hit: float = 1.0
    relevance: float = 0.5
    increment: float = 0.5
    fact: float = 0.0


@dataclass
class RewriteScores:
    rewrite: str
    relevance: float
    increment: int
    gold_rank: int | None          # 1-based rank in the fused list; None past `depth`
    gold_rank_alone: int | None    # the rewrite's own list
    reward: float
    fact_dropped: float = 0.0      # share of the query's fact words the rewrite leaves out

    def hit(self, k: int) -> bool:
        return self.gold_rank is not None and self.gold_rank <= k


class RetrievalJudge:
    def __init__(self, world: ShoppingWorld, similarity: EmbeddingTitleSimilarity, depth: int = 50,
                 relevance_k: int = 10, increment_k: int = 20, relevant_cosine: float = 0.5, weights: RewardWeights | None = None,
                 fact_share: float = 0.01):
        self.world = world
        self.similarity = similarity
        self.depth = depth
        self.relevance_k = relevance_k
        self.increment_k = increment_k
        self.relevant_cosine = relevant_cosine
        self.weights = weights or RewardWeights()
        self.fact_share = fact_share
        self._lists: dict[str, list[tuple[str, str]]] = {}
        self._doc_freq: dict[str, int] = {}
        self._catalogue_size: int | None = None

    def document_frequency(self, term: str) -> int:
        """Products holding `term` (an analysed term), counted by the engine once and cached."""
        if term not in self._doc_freq:
            if len(self._doc_freq) > 200_000:
                self._doc_freq.clear()
            self._doc_freq[term] = int(self.world.search(SearchRequest(terms=(term,), page_size=1)).total)
        return self._doc_freq[term]

    def fact_words(self, query: str) -> list[str]:
        """The query's rare catalogue words, its price and service phrases left out (module docstring)."""
        if self._catalogue_size is None:
            self._catalogue_size = max(1, self.world.backend.count())
        limit = self.fact_share * self._catalogue_size
        # Talk ("hi", "need") is rare in a catalogue too: only the words the rule rewriter would keep count.
        terms = dict.fromkeys(query_terms(" ".join(content_words(strip_constraints(query)))))
        return [t for t in terms if 0 < self.document_frequency(t) <= limit]

    def fact_dropped(self, query: str, rewrite: str) -> float:
        """Share of the query's fact words that `rewrite` leaves out (0.0 when it has none, or for "")."""
        facts = self.fact_words(query)
        if not facts or not rewrite:
            return 0.0
        kept = set(query_terms(rewrite))
        return sum(t not in kept for t in facts) / len(facts)

    def ranked(self, text: str) -> list[tuple[str, str]]:
        """(product id, title) of the top `depth` relevance-ranked hits of a plain-text query."""
        if text not in self._lists:
            terms = tuple(query_terms(text))
            hits = self.world.search(SearchRequest(terms=terms, page_size=self.depth)).hits if terms else []
            self._lists[text] = [(h.product_id, h.product.get("title", "")) for h in hits]
            if len(self._lists) > 50_000:
                self._lists.clear()
        return self._lists[text]

    def fused_ids(self, query: str, rewrites: Sequence[str]) -> list[str]:
        """The deployed list: `sandbox.rewrite_stage.search_with_rewrites`, fused from the cached lists."""
        lists = [self.ranked(r) for r in rewrites if r and query_terms(r) != query_terms(query)]
        original = [pid for pid, _ in self.ranked(query)]
        if not lists:
            return original
        return fuse_with_original(original, [[pid for pid, _ in lst] for lst in lists])[: self.depth]

    @staticmethod
    def _rank(ids: Sequence[str], gold: Sequence[str]) -> int | None:
        for i, pid in enumerate(ids, start=1):
            if pid in gold:
                return i
        return None

    def gold_ranks(self, q: LongTailQuery, rewrite: str) -> tuple[int | None, int | None]:
        """(fused rank, rank of the rewrite alone) of q's gold product: search only, no embeddings."""
        own = [p for p, _ in (self.ranked(rewrite) if rewrite else self.ranked(q.query))]
        fused = self.fused_ids(q.query, [rewrite] if rewrite else [])
        return self._rank(fused, q.gold_ids), self._rank(own, q.gold_ids)

    def score(self, q: LongTailQuery, rewrite: str) -> RewriteScores:
        """Scores of one rewrite of q; rewrite == "" scores the original query on its own."""
        original = self.ranked(q.query)
        own = self.ranked(rewrite) if rewrite else original
        rank, rank_alone = self.gold_ranks(q, rewrite)
        top = own[: self.relevance_k]
        seen = {p for p, _ in original}
        fresh = [(pid, t) for pid, t in own[: self.increment_k] if pid not in seen]
        self.similarity.embed_many([q.query] + [t for _, t in top] + [t for _, t in fresh])
        details = self.world.products([pid for pid, _ in top]) if (q.price_min or q.price_max or q.services) else {}
        rel = []
        for pid, title in top:
            cos = self.similarity(q.query, title)
            rel.append(0.5 * cos + 0.5 * q.satisfied(details[pid]) if pid in details else cos)
        relevance = sum(rel) / len(rel) if rel else 0.0
        increment = sum(self.similarity(q.query, t) >= self.relevant_cosine for _, t in fresh) if rewrite else 0
        gain = 1.0 / math.log2(1 + rank) if rank else 0.0
        dropped = self.fact_dropped(q.query, rewrite)
        w = self.weights
        reward = (w.hit * gain + w.relevance * relevance + w.increment * increment / self.increment_k
                  - w.fact * dropped)
        return RewriteScores(rewrite=rewrite, relevance=round(relevance, 4), increment=int(increment),
                             gold_rank=rank, gold_rank_alone=rank_alone,
                             reward=round(reward, 6), fact_dropped=round(dropped, 4))


def partial_order(rewards: Sequence[float], tie_tolerance: float = 1e-4) -> list[int]:
    """Level of each candidate: 0 is best; candidates within `tie_tolerance` share a level."""
    order = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    levels = [0] * len(rewards)
    level, anchor = 0, None
    for i in order:
        if anchor is not None and anchor - rewards[i] > tie_tolerance:
            level += 1
            anchor = rewards[i]
        elif anchor is None:
            anchor = rewards[i]
        levels[i] = level
    return levels
