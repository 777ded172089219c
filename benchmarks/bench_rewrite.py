"""Cost of query rewriting at serving time, against plain search in the same run.

On a built sandbox and a trained rewriter stage (default: runs/rewrite/align_pro) it measures,
over held-out long-tail queries:

  search_plain         world.search of the query alone (what the heuristic agent does today)
  search_fused         the search rewrite stage: query + one precomputed rewrite, RRF-fused
  rewrite_rule         the rule rewriter, per query
  rewrite_llm_single   the LLM rewriter, one query per call (greedy), as the rewrite_query tool runs
  rewrite_llm_batched  the same rewriter, batch-decoded (per query), as `shoplab rewrite eval` runs

    .venv/bin/python benchmarks/bench_rewrite.py --data-dir runs/sandbox --rewriter runs/rewrite/align_pro

Prints one JSON line and writes benchmarks/results/rewrite_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(s), 3), "p99_ms": round(1000 * s[int(0.99 * (len(s) - 1))], 3),
            "mean_ms": round(1000 * statistics.fmean(s), 3), "n": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="runs/sandbox")
    ap.add_argument("--rewriter", default="runs/rewrite/align_pro")
    ap.add_argument("--queries", default=None, help="queries_heldout.jsonl (default: next to the rewriter)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-llm-single", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/rewrite_latency.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rewrite import RewriteModel, RuleRewriter, read_queries
    from sandbox import SearchRequest, ShoppingWorld, query_terms
    from sandbox.rewrite_stage import search_with_rewrites

    world = ShoppingWorld.open(args.data_dir)
    qpath = Path(args.queries) if args.queries else Path(args.rewriter).parent / "data" / "queries_heldout.jsonl"
    queries = [q.query for q in read_queries(qpath)][: args.n]
    rule = RuleRewriter()
    model = RewriteModel.load(args.rewriter, batch_size=32)

    t = time.perf_counter()
    rewrites = model.rewrite_many(queries)
    batched = (time.perf_counter() - t) / len(queries)
    single = []
    for q in queries[: args.n_llm_single]:
        t = time.perf_counter()
        model.rewrite_many([q])
        single.append(time.perf_counter() - t)
    rule_t = []
    for q in queries:
        t = time.perf_counter()
        rule.rewrite(q)
        rule_t.append(time.perf_counter() - t)

    for q in queries[:20]:  # warm-up
        world.search(SearchRequest(terms=tuple(query_terms(q))))
    plain, fused = [], []
    for q, rw in zip(queries, rewrites, strict=True):
        request = SearchRequest(terms=tuple(query_terms(q)))
        t = time.perf_counter()
        world.search(request)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        search_with_rewrites(world.search, request, [rw] if rw else [])
        fused.append(time.perf_counter() - t)

    result = {"bench": "rewrite_latency", "data_dir": args.data_dir, "rewriter": args.rewriter,
              "n_products": world.manifest.get("n_products"), "queries": len(queries),
              "search_plain": _ms(plain), "search_fused": _ms(fused), "rewrite_rule": _ms(rule_t),
              "rewrite_llm_single": _ms(single), "rewrite_llm_batched_per_query_ms": round(1000 * batched, 2),
              "load_average": os.getloadavg()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
