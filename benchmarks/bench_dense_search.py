"""find_product's retrieval modes on one built sandbox: gold recall, filtered latency, dense build cost.

On a sandbox built with `shoplab sandbox build ... --dense` (or given `shoplab sandbox dense-index`):

  recall   recall@10 / @50 of the gold product, unfiltered relevance search of the query text, for
           (a) the rewrite data's held-out long-tail queries (`shoplab rewrite build-data`'s
               queries_heldout.jsonl, regenerated here exactly as rewrite.data does: DataConfig's
               defaults, seed 0; or read from --heldout-file), and
           (b) the dev tasks' instructions (the sandbox's tasks with a single gold product),
           for bm25, bm25 + the rule rewriter (the rewrite stage, `sandbox.rewrite_stage`), dense,
           dense + rule, hybrid, hybrid + rule.
  latency  p50/p99 of world.search for each mode on bench_search.py's filtered (and sorted) query
           set, one thread, after a warm-up; plus the HNSW search's recall@10 against an exact
           search under the same filters.
  build    the dense build's seconds and memory from the manifest (recorded by the build itself).
  asr      (--asr) the heuristic agent's ASR per intent on every task of the sandbox, shoplab profile,
           with each search mode (and bm25 under the shoppingbench profile for reference);
           run folders under --asr-dir.

    .venv/bin/python benchmarks/bench_dense_search.py --data-dir runs/sandbox_dense_200k

Prints one JSON line and writes benchmarks/results/dense/dense_search_<n_products>.{json,md}.
The dense encoder is never trained on an evaluated query's gold product: it trains on generated
products from 20,000 on (the manifest's `dense.filler_range`), the held-out queries are written from
generated products below ~2,000, and dev task golds are not generated products.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_search import code_fingerprint, dev_queries, requests_for, summary, timed  # noqa: E402
from sandbox.engines.base import SearchRequest, query_terms  # noqa: E402
from sandbox.rewrite_stage import search_with_rewrites  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402

MODES = ("bm25", "dense", "hybrid")
KS = (10, 50)


def heldout_queries(world: ShoppingWorld, path: str | None, seed: int) -> list[Any]:
    """The rewrite data's held-out long-tail queries: the file, or regenerated as rewrite.data does."""
    from rewrite.config import DataConfig
    from rewrite.data import read_queries
    from rewrite.longtail import LongTailGenerator

    if path:
        return read_queries(Path(path))
    cfg = DataConfig()
    rng = random.Random(f"{seed}:rewrite-data")  # rewrite.data.build_rewrite_data, first lines
    wanted = cfg.n_train_queries + cfg.n_heldout_queries
    products = world.filler_products(int(wanted * 1.3) + 10, start=cfg.filler_start)
    rng.shuffle(products)
    return LongTailGenerator(seed).generate(products)[: cfg.n_heldout_queries]


def task_queries(world: ShoppingWorld) -> list[dict[str, Any]]:
    out = []
    for t in world.tasks.values():
        if len(t.reward) == 1:
            out.append({"query": t.query, "gold": [t.reward[0].product_id], "intent": t.intent.value})
    return out


def gold_rank(search, text: str, gold: list[str], rewriter=None, depth: int = 50) -> int | None:
    terms = tuple(query_terms(text))
    if not terms:
        return None
    request = SearchRequest(terms=terms, page_size=depth, text=text)
    page = search_with_rewrites(search, request, rewriter(text)) if rewriter else search(request)
    for i, h in enumerate(page.hits, start=1):
        if h.product_id in gold:
            return i
    return None


def recall_table(world: ShoppingWorld, items: list[dict[str, Any]], rule) -> dict[str, Any]:
    """{system: {recall@10, recall@50, n, by_intent?}} for bm25/dense/hybrid, each with and without rules,
    and hybrid with plain (unweighted) RRF."""
    from sandbox.dense.search import hybrid_search

    out: dict[str, Any] = {}
    systems = [(m, m, world.search) for m in MODES]
    systems.append(("hybrid_plain_rrf", "hybrid",
                    lambda r: hybrid_search(world.dense, world.backend, r, dense_weight=1.0)))
    for system, mode, search in systems:
        world.set_search_mode(mode)
        for name, rw in ((system, None), (f"{system}+rule", rule)):
            ranks = [gold_rank(search, it["query"], it["gold"], rw) for it in items]
            row: dict[str, Any] = {"n": len(items)}
            for k in KS:
                row[f"recall@{k}"] = round(sum(r is not None and r <= k for r in ranks) / max(1, len(items)), 4)
            if "intent" in items[0]:
                by: dict[str, list] = defaultdict(list)
                for it, r in zip(items, ranks, strict=True):
                    by[it["intent"]].append(r)
                row["by_intent"] = {i: {"n": len(rs), **{f"recall@{k}": round(sum(r is not None and r <= k for r in rs)
                                                                              / len(rs), 4) for k in KS}}
                                    for i, rs in sorted(by.items())}
            out[name] = row
    world.set_search_mode("bm25")
    return out


def latency(world: ShoppingWorld, args: argparse.Namespace) -> dict[str, Any]:
    queries = dev_queries(world, args.n_latency, args.seed)
    res: dict[str, Any] = {}
    for kind in ("filtered", "sorted"):
        reqs = [replace(requests_for(q, kind), text=q["q"]) for q in queries]
        for mode in MODES:
            world.set_search_mode(mode)
            ms, _ = timed(world.search, reqs, args.warmup)
            res[f"{mode}_{kind}"] = summary(ms)
    # The HNSW walk under the filters against an exact search of the same filtered rows.
    world.set_search_mode("dense")
    index = world.dense
    rec, walked = [], 0
    for q in queries[: args.n_recall]:
        req = requests_for(q, "filtered")
        v = index.encoder.encode_query(q["q"])
        approx, _ = index.search_vector(v, req, 10)
        exact, _ = index.search_vector(v, req, 10, exact=True)
        rows, mask, _ = index.filter_rows(req)
        walked += rows is None
        if exact:
            rec.append(len({r for r, _ in approx} & {r for r, _ in exact}) / len(exact))
    res["dense_filtered_recall_vs_exact"] = {"recall@10": round(sum(rec) / max(1, len(rec)), 4), "n": len(rec),
                                             "hnsw_walks": walked}
    world.set_search_mode("bm25")
    return res


def agent_asr(world: ShoppingWorld, asr_dir: Path) -> dict[str, Any]:
    """The heuristic agent on every task, one run per search mode ({system: {intent: asr}})."""
    import shutil

    from agents.registry import make_agent
    from agents.runner import RunConfig, run_benchmark

    tasks = list(world.tasks.values())
    out: dict[str, Any] = {}
    systems = [("bm25/shoppingbench", "bm25", "shoppingbench")] + [(m, m, "shoplab") for m in MODES]
    for name, mode, profile in systems:
        world.set_search_mode(mode)
        run_dir = asr_dir / name.replace("/", "_")
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
        t0 = time.perf_counter()
        summary = run_benchmark(world, tasks, lambda: make_agent("heuristic"), run_dir,
                                RunConfig(agent="heuristic", profile=profile, search_mode=mode), progress=False)
        out[name] = {k: {"asr": v["asr"], "n": v["n"]} for k, v in summary.items()
                     if isinstance(v, dict) and "asr" in v}
        out[name]["seconds"] = round(time.perf_counter() - t0, 1)
    world.set_search_mode("bm25")
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# Retrieval modes at {res['n_products']:,} products", "",
             f"Sandbox `{res['data_dir']}`; {res['captured_at']}; one thread. Regenerate: "
             f"`.venv/bin/python benchmarks/bench_dense_search.py --data-dir {res['data_dir']}`.", "",
             "## Gold recall (unfiltered search of the query text)", "",
             "| system | held-out long-tail R@10 | R@50 | dev instructions R@10 | R@50 |", "|---|---|---|---|---|"]
    for name, row in res["recall"]["heldout"].items():
        d = res["recall"]["dev_tasks"][name]
        lines.append(f"| {name} | {row['recall@10']:.3f} | {row['recall@50']:.3f} | {d['recall@10']:.3f} | "
                     f"{d['recall@50']:.3f} |")
    lines += ["", f"held-out queries: {res['recall']['heldout']['bm25']['n']}; dev tasks with one gold: "
              f"{res['recall']['dev_tasks']['bm25']['n']}", ""]
    if res.get("latency"):
        lines += ["## Filtered search latency (world.search, ms)", "", "| mode | filtered p50 | p99 | sorted p50 | p99 |",
                  "|---|---|---|---|---|"]
        lat = res["latency"]
        for mode in MODES:
            f, s = lat[f"{mode}_filtered"], lat[f"{mode}_sorted"]
            lines.append(f"| {mode} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
        r = lat["dense_filtered_recall_vs_exact"]
        lines += ["", f"Dense top-10 under the filters vs exact: recall {r['recall@10']:.3f} over {r['n']} queries "
                  f"({r['hnsw_walks']} took the HNSW walk, the rest were exact over few rows).", ""]
    if res.get("asr"):
        intents = [k for k in next(iter(res["asr"].values())) if k != "seconds"]
        lines += ["## Heuristic agent ASR per intent (every task of the sandbox)", "",
                  "| search | " + " | ".join(intents) + " |", "|---|" + "---|" * len(intents)]
        for name, row in res["asr"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[i]['asr']:.3f}" for i in intents) + " |")
        lines += ["", "`bm25/shoppingbench` is the default profile (ShoppingBench's own Lucene search); the other "
                  "rows are the shoplab profile with each search mode.", ""]
    b = res.get("dense_build") or {}
    if b:
        lines += ["## Dense build", "", f"{b.get('n_products', 0):,} products: {b.get('seconds')} s in all "
                  f"(encoder training {b.get('train_seconds')} s, encoding {b.get('encode_seconds')} s, "
                  f"{b.get('kind')} indexing {b.get('index_seconds')} s); peak RSS of the build process "
                  f"{b.get('peak_rss_mb')} MB, RSS growth over the dense build {b.get('rss_growth_mb')} MB.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--heldout-file", default=None, help="a queries_heldout.jsonl (default: regenerated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-latency", type=int, default=600)
    ap.add_argument("--n-recall", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--asr", action="store_true", help="also the heuristic agent's ASR per intent with each mode")
    ap.add_argument("--asr-dir", default=str(ROOT / "runs" / "dense_asr"))
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results" / "dense"))
    args = ap.parse_args()

    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    from rewrite.rules import RuleRewriter

    started = time.perf_counter()
    world = ShoppingWorld.open(args.data_dir)
    world.set_search_mode("dense")
    world.dense  # noqa: B018 - load before timing
    heldout = [{"query": q.query, "gold": q.gold_ids} for q in heldout_queries(world, args.heldout_file, args.seed)]
    rule = RuleRewriter()
    res: dict[str, Any] = {
        "data_dir": args.data_dir, "n_products": world.manifest.get("n_products"), **code_fingerprint(),
        "recall": {"heldout": recall_table(world, heldout, rule), "dev_tasks": recall_table(world, task_queries(world),
                                                                                            rule)},
        "dense_build": world.manifest.get("dense"),
        "dense_filler_range": (world.manifest.get("dense") or {}).get("filler_range"),
    }
    if not args.skip_latency:
        res["latency"] = latency(world, args)
    if args.asr:
        res["asr"] = agent_asr(world, Path(args.asr_dir) / str(res["n_products"]))
    res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    res["bench_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = res["n_products"]
    (out / f"dense_search_{n}.json").write_text(json.dumps(res, indent=2))
    (out / f"dense_search_{n}.md").write_text(markdown(res))
    digest = {"n_products": n, **{f"{s}:{k}": v[k] for s, v in res["recall"]["heldout"].items()
                                  for k in ("recall@10", "recall@50")}}
    digest.update({f"dev:{s}:recall@10": v["recall@10"] for s, v in res["recall"]["dev_tasks"].items()})
    if "latency" in res:
        digest.update({f"{k}_p50_p99": [v["p50_ms"], v["p99_ms"]] for k, v in res["latency"].items() if "p50_ms" in v})
    if "asr" in res:
        digest.update({f"asr:{s}": v["overall"]["asr"] for s, v in res["asr"].items()})
    print(json.dumps(digest))


if __name__ == "__main__":
    main()
