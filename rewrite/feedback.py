"""`shoplab rewrite feedback`: beam-search candidates, scored through the sandbox's retrieval, in a
partial order per query (BEQUE's offline feedback)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rewrite.config import FeedbackSettings
from rewrite.data import write_jsonl
from rewrite.longtail import LongTailQuery
from rewrite.retrieval import RetrievalJudge, partial_order

CandidateGenerator = Callable[[Sequence[str], int], list[list[str]]]


def collect_feedback(generate: CandidateGenerator, judge: RetrievalJudge, queries: Sequence[LongTailQuery],
                     cfg: FeedbackSettings, out_path: str | Path | None = None, progress: bool = True
                     ) -> list[dict[str, Any]]:
    """One record per query: its candidates with relevance / increment / gold rank / reward / level.

    `generate(queries, n)` returns up to n distinct candidates per query (beam search of the SFT
    model). Queries whose candidates all tie carry no preference and are marked `usable: False`.
    """
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(queries), desc="feedback", unit="query", disable=not progress, mininterval=1.0)
    for i in range(0, len(queries), cfg.batch_size):
        chunk = list(queries[i: i + cfg.batch_size])
        cands = generate([q.query for q in chunk], cfg.num_beams)
        for q, texts in zip(chunk, cands, strict=True):
            original = judge.score(q, "")
            scored = [judge.score(q, t) for t in texts]
            levels = partial_order([s.reward for s in scored])
            records.append({
                "query": q.query, "gold_ids": q.gold_ids, "original": original.__dict__,
                "candidates": [{**s.__dict__, "level": lv} for s, lv in zip(scored, levels, strict=True)],
                "usable": len(set(levels)) > 1,
            })
        bar.update(len(chunk))
    bar.close()
    if out_path is not None:
        write_jsonl(Path(out_path), records)
    return records


def feedback_headroom(records: Sequence[dict[str, Any]], k: int = 10) -> dict[str, float]:
    """What alignment can win on these queries: hit@k of the first candidate (the top beam, what greedy
    decoding mostly gives), of the best candidate by reward (what ranking them perfectly would give), and
    of the best by hit alone; plus the mean candidate count and fact words dropped."""
    if not records:
        return {}

    def hit(c: dict[str, Any]) -> bool:
        return c["gold_rank"] is not None and c["gold_rank"] <= k

    rows = [r["candidates"] for r in records if r["candidates"]]
    n = max(1, len(rows))
    return {"mean_candidates": round(sum(len(c) for c in rows) / n, 2),
            f"top_candidate_hit@{k}": round(sum(hit(c[0]) for c in rows) / n, 4),
            f"best_reward_candidate_hit@{k}": round(sum(hit(max(c, key=lambda x: x["reward"])) for c in rows) / n, 4),
            f"any_candidate_hit@{k}": round(sum(any(hit(x) for x in c) for c in rows) / n, 4),
            "mean_fact_dropped": round(sum(x.get("fact_dropped", 0.0) for c in rows for x in c)
                                       / max(1, sum(len(c) for c in rows)), 4)}


def preference_rows(records: Sequence[dict[str, Any]], prompt_of: Callable[[str], Any], max_pairs: int = 3
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(PRO rows: prompt/completions/rewards, DPO rows: prompt/chosen/rejected) from usable records.

    DPO pairs take a candidate of the best level against one candidate of each worse level, best
    level first, at most `max_pairs` per query.
    """
    pro, dpo = [], []
    for r in records:
        if not r.get("usable"):
            continue
        cands = r["candidates"]
        prompt = prompt_of(r["query"])
        pro.append({"prompt": prompt, "completions": [c["rewrite"] for c in cands],
                    "rewards": [float(c["reward"]) for c in cands]})
        best = min(cands, key=lambda c: (c["level"], -c["reward"]))
        worse_levels = sorted({c["level"] for c in cands if c["level"] > best["level"]})
        for lv in worse_levels[:max_pairs]:
            rejected = max((c for c in cands if c["level"] == lv), key=lambda c: c["reward"])
            dpo.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": best["rewrite"]}],
                        "rejected": [{"role": "assistant", "content": rejected["rewrite"]}]})
    return pro, dpo
