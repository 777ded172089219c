"""Retrieval quality of rewriters on held-out long-tail queries: relevance, increment, hitrate@k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from rewrite.longtail import LongTailQuery
from rewrite.retrieval import RetrievalJudge


def retrieval_metrics(judge: RetrievalJudge, queries: Sequence[LongTailQuery], rewrites: Sequence[str],
                      ks: Sequence[int] = (10, 50), name: str = "", progress: bool = True) -> dict[str, Any]:
    """Means over queries. `rewrites[i]` is the rewrite of `queries[i]` ("" = no rewrite).

    hit@k is on the deployed list (query and rewrite fused); hit_alone@k on the rewrite's own list;
    fact_dropped: the share of each query's fact words the rewrite leaves out (`RetrievalJudge.fact_words`).
    `per_query` holds each query's hit@k (0/1, in query order), for paired comparisons of rewriters.
    """
    n = len(queries)
    sums: dict[str, float] = {"relevance": 0.0, "increment": 0.0, "empty_rewrites": 0.0, "fact_dropped": 0.0}
    per_query: dict[str, list[int]] = {f"hit@{k}": [] for k in ks}
    for k in ks:
        sums[f"hit@{k}"] = 0.0
        sums[f"hit_alone@{k}"] = 0.0
    for q, rw in tqdm(list(zip(queries, rewrites, strict=True)), desc=f"eval {name}".strip(), unit="query",
                      disable=not progress, mininterval=1.0):
        s = judge.score(q, rw)
        sums["relevance"] += s.relevance
        sums["increment"] += s.increment
        sums["empty_rewrites"] += not rw
        sums["fact_dropped"] += s.fact_dropped
        for k in ks:
            sums[f"hit@{k}"] += s.hit(k)
            per_query[f"hit@{k}"].append(int(s.hit(k)))
            sums[f"hit_alone@{k}"] += s.gold_rank_alone is not None and s.gold_rank_alone <= k
    return {key: round(v / max(1, n), 4) for key, v in sums.items()} | {"queries": n, "per_query": per_query}

