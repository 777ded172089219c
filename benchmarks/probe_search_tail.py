"""Where the filtered-search tail goes: the slowest of bench_search's filtered requests, taken apart.

For the `--top` slowest requests of the 600 (`bench_search.dev_queries`, filtered mode, through
`search_sorted_or_relaxed`) it times, three times each, the all-terms tier and the some-terms tier (any word,
without the products holding all of them) with its filters, without the exclusion, without the price range,
and without any filter (top 10, count=False: tantivy then prunes with block-max WAND).

    .venv/bin/python benchmarks/probe_search_tail.py --data-dir benchmarks/work/sb_2500000

Prints one JSON line and writes benchmarks/results/probe_search_tail_<size>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import dev_queries, pct, requests_for, warm_files  # noqa: E402

from sandbox.world import ShoppingWorld  # noqa: E402


def timed_ms(fn, repeat: int = 3) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return round((time.perf_counter() - started) / repeat * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n-queries", type=int, default=600)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    world = ShoppingWorld.open(args.data_dir)
    backend, searcher = world.backend, world.backend.searcher
    warm_files(world.data_dir / "index" / "tantivy")
    requests = [requests_for(q, "filtered") for q in dev_queries(world, args.n_queries, 0)]
    for r in requests[:50]:
        backend.search_sorted_or_relaxed(r)
    gc.disable()
    ms = []
    for r in requests:
        started = time.perf_counter()
        backend.search_sorted_or_relaxed(r)
        ms.append((time.perf_counter() - started) * 1000)
    gc.enable()
    rows = []
    for i in sorted(range(len(requests)), key=lambda i: -ms[i])[: args.top]:
        r = requests[i]
        rest = replace(r, require_all_terms=False, exclude_all_terms=True, page=1)
        variants = {"all_terms_tier": replace(r, require_all_terms=True), "some_terms_tier": rest,
                    "without_exclusion": replace(rest, exclude_all_terms=False),
                    "without_price_range": replace(rest, price_min=None, price_max=None),
                    "without_filters": replace(rest, price_min=None, price_max=None, services=(), shop_id=None)}
        row = {"ms": round(ms[i], 2), "terms": list(r.terms),
               "doc_freq": [searcher.doc_freq("contents", t) for t in r.terms],
               "price": [r.price_min, r.price_max], "services": list(r.services), "shop": r.shop_id}
        for name, variant in variants.items():
            query = backend.build_query(variant)
            row[name] = timed_ms(lambda q=query: searcher.search(q, limit=10, count=False))
        rows.append(row)
    n = backend.count()
    world.close()
    report = {"benchmark": "probe_search_tail", "n_products": n, "filtered_p50_ms": round(pct(ms, 50), 3),
              "filtered_p99_ms": round(pct(ms, 99), 3), "filtered_mean_ms": round(statistics.fmean(ms), 3),
              "slowest": rows}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"probe_search_tail_{n}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
