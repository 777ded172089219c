"""Candidate fixes for slow filtered relevance search, measured on a built sandbox (no sandbox code changed).

  or_filtered        what TantivyBackend.search does today (any-term BM25 ∩ filters, count=True)
  or_filtered_nocount   the same with count=False
  strict_first       all-terms ∩ filters first; only if that has fewer than offset+page_size matches, the
                     any-term query too (the rule sorted requests already use, applied to relevance)
  msm_half           any-term with minimum_number_should_match = ceil(n_terms / 2)
  or_prune           any-term ∩ filters, but terms in more than --df-frac of the products are left out of the
                     any-term clause (kept if fewer than 2 terms would remain: the 2 rarest are kept)
  strict_first_prune strict_first whose any-term fallback is or_prune

For strict_first and msm_half it also reports how often page 1 equals or_filtered's page 1 (same ids, same
order) and the mean overlap of the two top-10 sets, i.e. how much the ranking semantics would change.

    .venv/bin/python benchmarks/probe_filtered_strategies.py --size 2500000
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import tantivy  # noqa: E402
from bench_search import open_probe, probe_parser, save_probe, summary, timed  # noqa: E402


def main() -> None:
    ap = probe_parser()
    ap.add_argument("--df-frac", type=float, default=0.02)
    args = ap.parse_args()
    world, reqs = open_probe(args)
    be = world.backend
    s = be.searcher

    def ids(result):
        return [(a.segment_ord, a.doc) for _, a in result.hits]

    def or_filtered(r, count=True):
        return s.search(be.build_query(r), limit=r.page_size, offset=r.offset, count=count)

    def strict_first(r):
        strict = s.search(be.build_query(replace(r, require_all_terms=True)), limit=r.page_size, offset=r.offset,
                          count=True)
        if strict.count >= r.offset + r.page_size or len(r.terms) <= 1:
            return strict
        return s.search(be.build_query(r), limit=r.page_size, offset=r.offset, count=True)

    def msm_half(r):
        text = be.text_query(r.terms, False)
        if len(r.terms) >= 3:
            text = tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(
                be.schema, "contents", t, index_option="freq")) for t in r.terms],
                minimum_number_should_match=math.ceil(len(r.terms) / 2))
        q = tantivy.Query.boolean_query([(tantivy.Occur.Must, text), *be.filter_clauses(r)])
        return s.search(q, limit=r.page_size, offset=r.offset, count=True)

    n_docs = s.num_docs
    df_cache: dict[str, int] = {}

    def pruned(r):
        if len(r.terms) <= 2:
            return r
        dfs = {t: df_cache.setdefault(t, s.doc_freq("contents", t)) for t in r.terms}
        keep = [t for t in r.terms if dfs[t] <= args.df_frac * n_docs]
        if len(keep) < 2:
            keep = sorted(r.terms, key=lambda t: dfs[t])[:2]
            keep = [t for t in r.terms if t in keep]
        return replace(r, terms=tuple(keep))

    def or_prune(r):
        return s.search(be.build_query(pruned(r)), limit=r.page_size, offset=r.offset, count=True)

    def strict_first_prune(r):
        strict = s.search(be.build_query(replace(r, require_all_terms=True)), limit=r.page_size, offset=r.offset,
                          count=True)
        if strict.count >= r.offset + r.page_size or len(r.terms) <= 1:
            return strict
        return or_prune(r)

    res = {"size": args.size, "n": len(reqs), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    ref = None
    for name, fn in [("or_filtered", or_filtered), ("or_filtered_nocount", lambda r: or_filtered(r, False)),
                     ("strict_first", strict_first), ("msm_half", msm_half), ("or_prune", or_prune),
                     ("strict_first_prune", strict_first_prune)]:
        ms, outs = timed(fn, reqs, args.warmup)
        pages = [ids(o) for o in outs]
        extra = {}
        if ref is None:
            ref = pages
        else:
            same = sum(1 for a, b in zip(pages, ref, strict=True) if a == b)
            overlap = [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(pages, ref, strict=True) if b]
            extra = {"same_page_as_or": f"{same}/{len(ref)}", "mean_top10_overlap": round(sum(overlap) / len(overlap), 3)}
        res[name] = summary(ms, **extra)
        print(f"  {name}: {res[name]}", file=sys.stderr, flush=True)
    save_probe(f"probe_filtered_strategies_{args.size}", res)


if __name__ == "__main__":
    main()
