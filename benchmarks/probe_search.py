"""Where does filtered-search time go? Variants of the engine query on the same request set.

Every variant runs the same filtered requests as bench_search.py's `filtered` mode (relevance, price range +
service + sometimes shop_id), timing `searcher.search(...)` only (no stored-doc loading) unless stated:

  as_is                  TantivyBackend.search(): count=True, fast-field price range, + loading 10 stored docs
  search_only            the same query and kwargs, no stored-doc loading
  no_count               count=False (lets tantivy skip counting every match)
  text_only              the text query alone (no filter), count=True
  text_only_no_count     the text query alone, count=False (block-max WAND applies)
  no_price               service (+shop) filters only
  price_only             price range filter only
  price_inverted         price range via the inverted index (use_inverted_index=True)
  price_inverted_no_count
  all_terms              require_all_terms=True with filters (what sorted requests try first)
  doc_load_10            loading + json-decoding 10 stored docs alone

    .venv/bin/python benchmarks/probe_search.py --size 2500000

Prints one JSON line and writes benchmarks/results/probe_search_<size>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import tantivy  # noqa: E402
from bench_search import open_probe, probe_parser, save_probe, summary, timed  # noqa: E402


def main() -> None:
    args = probe_parser().parse_args()
    world, reqs = open_probe(args)
    be = world.backend
    schema, searcher = be.schema, be.searcher
    must = tantivy.Occur.Must

    def q_with(req, price=True, services=True, shop=True, inverted=False, require_all=False):
        clauses = [(must, be.text_query(req.terms, require_all))]
        if shop and req.shop_id is not None:
            clauses.append((must, be._filter(tantivy.Query.term_query(schema, "shop_id", req.shop_id))))
        if price and (req.price_min is not None or req.price_max is not None):
            rq = tantivy.Query.range_query(schema, "price", tantivy.FieldType.Float, lower_bound=req.price_min,
                                           upper_bound=req.price_max, use_inverted_index=inverted)
            clauses.append((must, be._filter(rq)))
        if services:
            for s in req.services:
                clauses.append((must, be._filter(tantivy.Query.term_query(schema, "service", s))))
        return tantivy.Query.boolean_query(clauses)

    def run(make_query, count=True):
        def f(req):
            return searcher.search(make_query(req), limit=req.page_size, offset=req.offset, count=count)
        return f

    # Precompute doc addresses for the doc-load-only variant.
    addresses = [searcher.search(be.build_query(r), limit=10, count=False).hits for r in reqs]

    def load_docs(hits):
        return [json.loads(searcher.doc(a)["doc"][0]) for _, a in hits]

    variants = {
        "as_is": be.search,
        "search_only": run(be.build_query),
        "no_count": run(be.build_query, count=False),
        "text_only": run(lambda r: be.text_query(r.terms, False)),
        "text_only_no_count": run(lambda r: be.text_query(r.terms, False), count=False),
        "no_price": run(lambda r: q_with(r, price=False)),
        "price_only": run(lambda r: q_with(r, services=False, shop=False)),
        "price_inverted": run(lambda r: q_with(r, inverted=True)),
        "price_inverted_no_count": run(lambda r: q_with(r, inverted=True), count=False),
        "all_terms": run(lambda r: q_with(r, require_all=True)),
    }
    res = {"size": args.size, "n_queries": len(reqs), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    for name, fn in variants.items():
        ms, _ = timed(fn, reqs, args.warmup)
        res[name] = summary(ms)
        print(f"  {name}: p50 {res[name]['p50_ms']} p95 {res[name]['p95_ms']} p99 {res[name]['p99_ms']}",
              file=sys.stderr, flush=True)
    ms, _ = timed(load_docs, addresses, args.warmup)
    res["doc_load_10"] = summary(ms)
    # How selective are the filters? (counts of docs matching the text vs text+filters)
    t_counts = [searcher.search(be.text_query(r.terms, False), limit=1).count for r in reqs[:200]]
    f_counts = [searcher.search(be.build_query(r), limit=1).count for r in reqs[:200]]
    res["mean_text_matches"] = round(sum(t_counts) / len(t_counts))
    res["mean_filtered_matches"] = round(sum(f_counts) / len(f_counts))
    save_probe(f"probe_search_{args.size}", res)


if __name__ == "__main__":
    main()
