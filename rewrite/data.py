"""`shoplab rewrite build-data`: long-tail queries, candidate rewrites kept by rejection sampling,
and BEQUE's multi-instruction SFT set (rewrite, quality classification, title prediction, CoT)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rewrite.cleaning import clean_rewrite
from rewrite.config import DataConfig
from rewrite.longtail import LongTailGenerator, LongTailQuery
from rewrite.prompts import cot_answer, prompt_messages
from rewrite.retrieval import RetrievalJudge
from rewrite.rules import RuleRewriter, content_words, strip_constraints

CandidateSampler = Callable[[Sequence[str]], list[list[str]]]
_WEBSHOP_PRICE = re.compile(r",?\s*(?:and\s+)?price\s+(?:lower|less|higher|greater)\s+than\s+[\d.,]+\s*dollars?", re.I)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_queries(path: Path) -> list[LongTailQuery]:
    return [LongTailQuery.from_dict(r) for r in read_jsonl(path)]


def webshop_pairs(path: str | Path, limit: int, seed: int) -> list[tuple[str, str]]:
    """(instruction without its price clause, the first query a person typed for it), cleaned."""
    raw = json.loads(Path(path).read_text())
    pairs = [(_WEBSHOP_PRICE.sub("", goal).strip(), clean_rewrite(queries[0])) for goal, queries in raw.items()
             if queries and isinstance(queries[0], str)]
    pairs = [(g, q) for g, q in pairs if g and q]
    random.Random(f"{seed}:webshop").shuffle(pairs)
    return pairs[:limit]


def _example(task: str, answer: str, source: str, **fields: str) -> dict[str, Any]:
    return {"prompt": prompt_messages(task, **fields), "completion": [{"role": "assistant", "content": answer}],
            "task": task, "source": source}


def validation_queries(world: Any, cfg: DataConfig, n: int, seed: int = 0) -> list[LongTailQuery]:
    """`n` long-tail queries written from products after those `build_rewrite_data` draws from: neither
    SFT nor the offline feedback sees them, so they can choose when alignment stops."""
    wanted = cfg.n_train_queries + cfg.n_heldout_queries
    start = cfg.filler_start + int(wanted * 1.3) + 10
    products = world.filler_products(int(n * 1.3) + 10, start=start)
    random.Random(f"{seed}:rewrite-validation").shuffle(products)
    return LongTailGenerator(seed + 1).generate(products)[:n]


def build_rewrite_data(judge: RetrievalJudge, cfg: DataConfig, out_dir: str | Path, seed: int = 0,
                       sampler: CandidateSampler | None = None, progress: bool = True) -> dict[str, Any]:
    out = Path(out_dir)
    rng = random.Random(f"{seed}:rewrite-data")
    wanted = cfg.n_train_queries + cfg.n_heldout_queries
    products = judge.world.filler_products(int(wanted * 1.3) + 10, start=cfg.filler_start)
    if not products:
        raise ValueError("the sandbox has no generated products to write queries from; build it with more "
                         "--products than it has task golds")
    rng.shuffle(products)
    queries = LongTailGenerator(seed).generate(products)
    heldout, train = queries[: cfg.n_heldout_queries], queries[cfg.n_heldout_queries: wanted]
    write_jsonl(out / "queries_heldout.jsonl", [q.as_dict() for q in heldout])
    write_jsonl(out / "queries_train.jsonl", [q.as_dict() for q in train])

    rules = RuleRewriter()
    sampled: list[list[str]] = [[] for _ in train]
    n_llm = min(cfg.llm_candidate_queries, len(train)) if sampler else 0
    if n_llm:
        sampled[:n_llm] = sampler([q.query for q in train[:n_llm]])

    rows: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    quality_pool: list[tuple[str, str, str]] = []
    kept_by_source: Counter[str] = Counter()
    inf = 10**9
    for q, llm_cands in tqdm(list(zip(train, sampled, strict=True)), desc="rejection sampling", unit="query",
                             disable=not progress, mininterval=1.0):
        base_rank, _ = judge.gold_ranks(q, "")
        cands = {c: "rule" for c in rules.candidates(q.query)}
        cands.setdefault(clean_rewrite(q.mined_rewrite), "mined")
        for c in llm_cands:
            cands.setdefault(c, "llm")
        scored = []
        for c, src in cands.items():
            if not c:
                continue
            fused, alone = judge.gold_ranks(q, c)
            # Kept: the rewrite alone finds the gold higher than the query did (or first), and the
            # deployed fused list does not get worse.
            ok = alone is not None and (alone < (base_rank or inf) or alone == 1) and (fused or inf) <= (base_rank or inf)
            scored.append({"rewrite": c, "source": src, "gold_rank": fused, "gold_rank_alone": alone, "kept": ok})
        rows.append({"query": q.query, "gold_rank": base_rank, "candidates": scored})
        quality_pool.extend((q.query, s["rewrite"], "Yes" if s["kept"] else "No") for s in scored)
        # At equal ranks the fuller rewrite wins: a shorter one found this gold by dropping words
        # (an attribute, a size) that other queries need, and SFT on it learned to drop them.
        kept = sorted((s for s in scored if s["kept"]), key=lambda s: (s["gold_rank_alone"], s["gold_rank"] or inf,
                                                                        -len(s["rewrite"].split())))
        if not kept:
            continue
        best = kept[0]
        kept_by_source[best["source"]] += 1
        examples.append(_example("rewrite", best["rewrite"], f"longtail:{best['source']}", query=q.query))
        if rng.random() < cfg.title_share:
            examples.append(_example("title", " ".join(q.gold_title.split()[:12]), "longtail", query=q.query))
        if rng.random() < cfg.cot_share:
            words = content_words(strip_constraints(q.query))
            dropped = [w for w in content_words(q.query) if w not in best["rewrite"].lower().split()]
            examples.append(_example("cot", cot_answer(words, dropped, best["rewrite"]), "longtail", query=q.query))
    n_longtail_rewrites = sum(e["task"] == "rewrite" for e in examples)

    shop_pairs = webshop_pairs(cfg.webshop_pairs, cfg.max_webshop_pairs, seed) if cfg.webshop_pairs else []
    for goal, query in shop_pairs:
        examples.append(_example("rewrite", query, "webshop", query=goal))

    yes = [p for p in quality_pool if p[2] == "Yes"]
    no = [p for p in quality_pool if p[2] == "No"]
    rng.shuffle(yes)
    rng.shuffle(no)
    n_quality = int(cfg.quality_share * n_longtail_rewrites) // 2
    for query, cand, label in yes[:n_quality] + no[:n_quality]:
        examples.append(_example("quality", label, "longtail", query=query, rewrite=cand))
    rng.shuffle(examples)
    write_jsonl(out / "candidates.jsonl", rows)
    write_jsonl(out / "sft.jsonl", examples)
    stats = {
        "train_queries": len(train), "heldout_queries": len(heldout),
        "styles": dict(Counter(q.style for q in train)),
        "queries_with_kept_rewrite": n_longtail_rewrites,
        "kept_rate": round(n_longtail_rewrites / max(1, len(train)), 3),
        "kept_by_source": dict(kept_by_source), "llm_sampled_queries": n_llm,
        "webshop_pairs": len(shop_pairs), "sft_examples": len(examples),
        "sft_by_task": dict(Counter(e["task"] for e in examples)),
        "original_hit@10": round(sum((r["gold_rank"] or inf) <= 10 for r in rows) / max(1, len(rows)), 3),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
