"""Does indexing products in price order shorten the filtered-search tail?

Re-indexes a built sandbox's products into a second tantivy index, sorted by price (ties: the original
order), then times bench_search's filtered and sorted requests on both indexes, alternating, in the same
process. In price order a price range is one run of document ids per segment, so the intersection skips
every product outside it instead of scoring it.

    .venv/bin/python benchmarks/probe_price_order.py --data-dir benchmarks/work/sb_2500000

Prints one JSON line and writes benchmarks/results/probe_price_order_<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import orjson  # noqa: E402
from bench_search import dev_queries, requests_for, summary, timed, warm_files  # noqa: E402

from sandbox.engines.prepared import prepare  # noqa: E402
from sandbox.engines.tantivy_backend import TantivyBackend, build_writer_settings  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402


def stored_products(backend: TantivyBackend):
    """Every stored product in index order (document addresses, no sort: `iter_all` pages by product id)."""
    for _, _, raw in backend.stored_in_document_order():
        yield orjson.loads(raw)


def reindex_in_price_order(source: TantivyBackend, target: Path) -> dict:
    started = time.perf_counter()
    rows = [prepare(p) for p in stored_products(source)]
    rows.sort(key=lambda r: r.price)
    read_s = time.perf_counter() - started
    commit_every, heap = build_writer_settings(len(rows))
    backend = TantivyBackend(target, create=True, heap_size=heap, commit_every=commit_every)
    for i in range(0, len(rows), 10_000):
        backend.index_prepared(rows[i:i + 10_000])
    backend.commit()
    return {"n": len(rows), "read_sort_s": round(read_s, 1), "index_s": round(time.perf_counter() - started - read_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--target", default=None, help="where the price-ordered index goes (default: beside)")
    ap.add_argument("--n-queries", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    world = ShoppingWorld.open(args.data_dir)
    source = world.backend
    target = Path(args.target or Path(args.data_dir).parent / (Path(args.data_dir).name + "_price_order"))
    info = {}
    if not (target / "meta.json").exists():
        info = reindex_in_price_order(source, target)
        print(f"re-indexed: {info}", file=sys.stderr)
    ordered = TantivyBackend(target)
    warm_files(world.data_dir / "index" / "tantivy")
    warm_files(target)
    queries = dev_queries(world, args.n_queries, 0)
    out: dict = {"size": source.count(), "reindex": info, "loadavg_start": list(os.getloadavg())}
    for mode in ("filtered", "sorted", "relevance"):
        requests = [requests_for(q, mode) for q in queries]
        for backend in (source, ordered):  # untimed pass: first touch of each index's pages
            timed(backend.search_sorted_or_relaxed, requests, warmup=0)
        times = {"catalogue_order": [], "price_order": []}
        for _ in range(args.rounds):
            for name, backend in (("catalogue_order", source), ("price_order", ordered)):
                ms, pages = timed(backend.search_sorted_or_relaxed, requests, warmup=0)
                times[name].extend(ms)
                if name == "catalogue_order":
                    base_pages = pages
                else:
                    same_ids = sum([h.product_id for h in a.hits] == [h.product_id for h in b.hits]
                                   for a, b in zip(base_pages, pages, strict=True))
                    same_scores = sum([round(h.score, 4) for h in a.hits] == [round(h.score, 4) for h in b.hits]
                                      for a, b in zip(base_pages, pages, strict=True))
                    same_total = sum(a.total == b.total for a, b in zip(base_pages, pages, strict=True))
        out[mode] = {name: summary(ms) for name, ms in times.items()}
        out[mode]["same_page_ids"] = same_ids
        out[mode]["same_page_scores"] = same_scores
        out[mode]["same_total"] = same_total
        print(mode, json.dumps(out[mode]), file=sys.stderr)
    out["loadavg_end"] = list(os.getloadavg())
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"probe_price_order_{out['size']}.json")
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
