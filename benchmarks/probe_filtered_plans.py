"""Can a filtered any-term query be answered faster than tantivy's filtered disjunction, with the same page?

The filtered p99 at 2.5M products is the some-terms tier: the top k products holding any of the words, with
a price range and services. With filters tantivy intersects the whole union of the words' postings (no
block-max WAND: it prunes only a pure disjunction of term queries), so common words cost 10-20 ms. This
probe re-indexes a built sandbox's stored products into a side index with three extra fields and times two
exact alternatives beside the plain query, on the same index, request by request, in one process:

* `plain`: what the backend runs today: Must(any word) + Must(price range) + Must(service), filters scoring 0.
* `filters_as_postings`: one pure disjunction that tantivy can prune by block-max WAND. The price range is
  a union of dyadic log-price band terms (field `pband`, one token per level, so every product has the same
  field length), each service a term of field `svc` (every product holds `s` or `-s` for each service, the
  same length again), the shop its term; each filter term is boosted so that it scores C = (the sum of the
  words' max impacts) + 1. A product meeting every filter scores above nf * C and all others below, so the
  top of this disjunction is the filtered top, up to float rounding and the edge bands, which hold products
  just outside the range. Its candidates are then rescored by the plain query restricted to them (a term set
  on a `row` field), and the top-k is accepted only when no product outside the candidates can beat the k-th
  exact score (the k'-th disjunction score minus nf * C, plus a rounding margin); otherwise k' grows, then
  the plain query answers.
* `two_shards_threads`: the plain query split into two halves of the catalogue (a `shard` term per half, so
  each half's intersection skips the other half's documents), run in two threads (tantivy-py releases the
  GIL while it searches), pages merged by (score, document address); `halves_one_thread` runs the same two
  halves one after the other.

Every plan's page is compared with `plain`'s (same documents, same order).

    .venv/bin/python benchmarks/probe_filtered_plans.py --data-dir benchmarks/work/sb_2500000

Prints one JSON line and writes benchmarks/results/probe_filtered_plans_<size>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import tantivy  # noqa: E402
from bench_search import dev_queries, requests_for, summary  # noqa: E402
from probe_price_order import stored_products  # noqa: E402

from sandbox.data_model import SERVICES  # noqa: E402
from sandbox.engines.base import SearchRequest, searchable_text  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402

FINE_BANDS_LOG2 = 8  # 256 log-price bands; levels 0..8 of dyadic unions
LOG_LOW, LOG_HIGH = math.log(0.5), math.log(2e6)
MUST, SHOULD = tantivy.Occur.Must, tantivy.Occur.Should


def fine_band(price: float) -> int:
    band = int((math.log(max(price, 0.5)) - LOG_LOW) / (LOG_HIGH - LOG_LOW) * (1 << FINE_BANDS_LOG2))
    return min(max(band, 0), (1 << FINE_BANDS_LOG2) - 1)


def dyadic_cover(low: int, high: int) -> list[tuple[int, int]]:
    """The fewest dyadic (level, index) blocks whose union is fine bands low..high."""
    out = []
    level = 0
    while low <= high and level <= FINE_BANDS_LOG2:
        if low & 1:
            out.append((level, low))
            low += 1
        if not high & 1:
            out.append((level, high))
            high -= 1
        low >>= 1
        high >>= 1
        level += 1
    return out


def side_schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("contents", stored=False, tokenizer_name="default", index_option="freq")
    sb.add_text_field("shop_id", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("service", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_float_field("price", stored=False, indexed=True, fast=True)
    sb.add_text_field("pband", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("svc", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("shard", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_unsigned_field("row", stored=False, indexed=True, fast=True)
    return sb.build()


def build_side_index(world: ShoppingWorld, path: Path) -> tuple[tantivy.Index, dict[str, Any]]:
    started = time.perf_counter()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    index = tantivy.Index(side_schema(), path=str(path))
    writer = index.writer(heap_size=1_000_000_000, num_threads=1)
    n_total = world.backend.count()
    gc.disable()
    for row, p in enumerate(stored_products(world.backend)):
        doc = tantivy.Document()
        doc.add_text("contents", searchable_text(p))
        doc.add_text("shop_id", str(p["shop_id"]))
        services = set(p.get("service") or ())
        for s in SERVICES:
            doc.add_text("svc", s if s in services else f"-{s}")
            if s in services:
                doc.add_text("service", s)
        doc.add_float("price", float(p["price"]))
        band = fine_band(float(p["price"]))
        for level in range(FINE_BANDS_LOG2 + 1):
            doc.add_text("pband", f"{level}:{band >> level}")
        doc.add_text("shard", str(2 * row // n_total))
        doc.add_unsigned("row", row)
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    gc.enable()
    index.reload()
    return index, {"side_index_s": round(time.perf_counter() - started, 1), "segments": index.searcher().num_segments}


class Plans:
    def __init__(self, index: tantivy.Index):
        self.schema = index.schema
        self.searcher = index.searcher()
        self.n_docs = self.searcher.num_docs
        self._impacts: dict[tuple[str, str], float] = {}
        self.pool = ThreadPoolExecutor(2)
        self.stats = {"fallback_to_plain": 0, "widened": 0}

    def term(self, field: str, value: str) -> tantivy.Query:
        return tantivy.Query.term_query(self.schema, field, value, index_option="freq" if field == "contents" else "basic")

    def impact(self, field: str, value: str) -> float:
        key = (field, value)
        if key not in self._impacts:
            hits = self.searcher.search(self.term(field, value), limit=1, count=False).hits
            self._impacts[key] = float(hits[0][0]) if hits else 0.0
        return self._impacts[key]

    def words(self, r: SearchRequest) -> list[str]:
        return [t for t in r.terms if self.impact("contents", t) > 0]

    def filters(self, r: SearchRequest) -> list[tuple[tantivy.Occur, tantivy.Query]]:
        queries = []
        if r.shop_id is not None:
            queries.append(self.term("shop_id", r.shop_id))
        if r.price_min is not None or r.price_max is not None:
            queries.append(tantivy.Query.range_query(self.schema, "price", tantivy.FieldType.Float,
                                                     lower_bound=r.price_min, upper_bound=r.price_max))
        queries += [self.term("service", s) for s in r.services]
        return [(MUST, tantivy.Query.const_score_query(q, 0.0)) for q in queries]

    def plain_query(self, words: list[str], r: SearchRequest, extra=()) -> tantivy.Query:
        text = tantivy.Query.boolean_query([(SHOULD, self.term("contents", t)) for t in words])
        return tantivy.Query.boolean_query([(MUST, text), *self.filters(r), *extra])

    def plain(self, r: SearchRequest, k: int) -> list:
        words = self.words(r)
        return self.searcher.search(self.plain_query(words, r), limit=k, count=False).hits if words else []

    def filters_as_postings(self, r: SearchRequest, k: int) -> list:
        words = self.words(r)
        if not words:
            return []
        c = sum(self.impact("contents", t) for t in words) + 1.0
        groups: list[list[tuple[str, str]]] = []
        if r.shop_id is not None:
            groups.append([("shop_id", r.shop_id)])
        low = fine_band(r.price_min) if r.price_min is not None else 0
        high = fine_band(r.price_max) if r.price_max is not None else (1 << FINE_BANDS_LOG2) - 1
        if (low, high) != (0, (1 << FINE_BANDS_LOG2) - 1):
            groups.append([("pband", f"{level}:{j}") for level, j in dyadic_cover(low, high)])
        groups += [[("svc", s)] for s in r.services]
        clauses = [(SHOULD, self.term("contents", t)) for t in words]
        for group in groups:
            for field, value in group:
                if self.impact(field, value) > 0:
                    clauses.append((SHOULD, tantivy.Query.boost_query(self.term(field, value),
                                                                      c / self.impact(field, value))))
        query = tantivy.Query.boolean_query(clauses)
        base = len(groups) * c
        margin = 1e-5 * base + 1e-6
        limit = 2 * k
        while True:
            hits = self.searcher.search(query, limit=limit, count=False).hits
            candidates = [a for score, a in hits if float(score) > base - margin]
            exact = []
            if candidates:
                rows = self.searcher.fast_field_values("row", candidates)
                only = tantivy.Query.const_score_query(tantivy.Query.term_set_query(self.schema, "row", rows), 0.0)
                exact = self.searcher.search(self.plain_query(words, r, [(MUST, only)]), limit=k,
                                             count=False).hits
            if len(hits) < limit:
                return exact  # every product scoring above zero was a candidate
            last = float(hits[-1][0])
            if len(exact) >= k and last - base + margin < float(exact[k - 1][0]):
                return exact
            if last <= base + margin or limit >= 8 * k:
                self.stats["fallback_to_plain"] += 1
                return self.plain(r, k)
            self.stats["widened"] += 1
            limit *= 4

    def two_shards_threads(self, r: SearchRequest, k: int) -> list:
        words = self.words(r)
        if not words:
            return []
        queries = [self.plain_query(words, r, [(MUST, tantivy.Query.const_score_query(self.term("shard", str(i)), 0.0))])
                   for i in (0, 1)]
        halves = list(self.pool.map(lambda q: self.searcher.search(q, limit=k, count=False).hits, queries))
        return self._merge(halves, k)

    def halves_one_thread(self, r: SearchRequest, k: int) -> list:
        """The same two halves one after the other (what each half costs, without threads)."""
        words = self.words(r)
        if not words:
            return []
        halves = [self.searcher.search(self.plain_query(words, r, [(MUST, tantivy.Query.const_score_query(
            self.term("shard", str(i)), 0.0))]), limit=k, count=False).hits for i in (0, 1)]
        return self._merge(halves, k)

    @staticmethod
    def _merge(halves: list[list], k: int) -> list:
        merged = [h for half in halves for h in half]
        merged.sort(key=lambda h: (-float(h[0]), h[1].segment_ord, h[1].doc))
        return merged[:k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--side-dir", default=None, help="where the side index goes (default: <data-dir>.plans_probe)")
    ap.add_argument("--n-queries", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    world = ShoppingWorld.open(data_dir)
    requests = [requests_for(q, "filtered") for q in dev_queries(world, args.n_queries, args.seed)]
    res: dict[str, Any] = {"n_products": world.backend.count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    side = Path(args.side_dir or f"{data_dir}.plans_probe")
    index, info = build_side_index(world, side)
    world.close()
    res.update(info)
    print(f"side index: {info}", file=sys.stderr, flush=True)
    plans = Plans(index)
    names = ("plain", "filters_as_postings", "two_shards_threads", "halves_one_thread")
    for r in requests[:60]:  # warm the page cache and the impacts for every plan
        for name in names:
            getattr(plans, name)(r, r.offset + r.page_size)
    plans.stats = {"fallback_to_plain": 0, "widened": 0}
    ms: dict[str, list[float]] = {n: [] for n in names}
    same = {n: 0 for n in names[1:]}
    gc.disable()
    for r in requests:
        k = r.offset + r.page_size
        pages = {}
        for name in names:  # alternating, request by request
            started = time.perf_counter()
            pages[name] = getattr(plans, name)(r, k)
            ms[name].append((time.perf_counter() - started) * 1000)
        ref = [(h[1].segment_ord, h[1].doc) for h in pages["plain"]]
        for name in names[1:]:
            same[name] += ref == [(h[1].segment_ord, h[1].doc) for h in pages[name]]
    gc.enable()
    for name in names:
        res[name] = summary(ms[name], **({"same_page_as_plain": f"{same[name]}/{len(requests)}"} if name in same else {}))
    res["filters_as_postings"].update(plans.stats)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "benchmarks" / "results" / f"probe_filtered_plans_{res['n_products']}.json"
    out.write_text(json.dumps(res, indent=2))
    shutil.rmtree(side, ignore_errors=True)
    print(json.dumps({k: ([v["p50_ms"], v["p99_ms"]] if isinstance(v, dict) else v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
