"""The optional rewrite stage of search: the original query plus its rewrites, results fused.

The sandbox knows nothing of how rewrites are made (an LLM, rules, a lookup table): it takes any
`QueryRewriter`, a callable from the query text to a few rewrite texts. Rewrites are plain text
and go through the same `query_terms` analysis as the query, so no query syntax reaches the engine.

Fusion rule (documented for users and in `docs/rewrite.md`): reciprocal-rank fusion,
`score(p) = sum over lists of 1 / (RRF_K + rank)`, over the top `FUSION_DEPTH` relevance-ranked
hits of each list, with `RRF_K = 60` (Cormack et al. 2009). A product that both the query and a
rewrite retrieve rises; at equal score the original query's list comes first, then the rewrites' in
their order (`fuse_with_original`). Rewrites add recall: a rewrite's first hit still lands second
when the query's own first hit is a different product, but it never displaces a first hit the
query's own words chose unless some product has both lists' support. Until 2026-12 the rewrites'
lists came first at equal score: on the 200k sandbox that left hit@10/hit@50 of every rewriter the
same to within one held-out query and cost the heuristic agent's web tasks (whose answer hangs on a
word of the question) 0.28 -> 0.08 ASR with the rule rewriter (docs/results.md). A request sorted by
price or sales keeps that order: the fused set is re-sorted by the sort key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from sandbox.engines.base import SearchHit, SearchPage, SearchRequest, SortOrder, query_terms

QueryRewriter = Callable[[str], Sequence[str]]
RRF_K = 60
FUSION_DEPTH = 50
MAX_REWRITES = 4


def weighted_rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None,
                 k: int = RRF_K) -> list[tuple[str, float]]:
    """(id, score) by `score = sum over lists of weight / (k + rank)`, best first; ties go to the list
    given first, then to the better rank there. Weights default to 1."""
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    score: dict[str, float] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for li, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[li])
        for rank, pid in enumerate(ranking, start=1):
            score[pid] = score.get(pid, 0.0) + weight / (k + rank)
            first_seen.setdefault(pid, (li, rank))
    return [(p, score[p]) for p in sorted(score, key=lambda p: (-score[p], first_seen[p]))]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    """Ids ordered by RRF score; ties go to the list given first, then to the better rank there."""
    return [pid for pid, _ in weighted_rrf(rankings, k=k)]


def fuse_with_original(original: Sequence[str], rewritten: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    """The deployed order of the rewrite stage: RRF over the original ranking and each rewrite's ranking,
    the original's list first so that it wins ties (see the module docstring)."""
    return reciprocal_rank_fusion([original, *rewritten], k)


def _sort_key(request: SearchRequest):
    if request.sort == SortOrder.priceasc:
        return lambda h: float(h.product["price"])
    if request.sort == SortOrder.pricedesc:
        return lambda h: -float(h.product["price"])
    return lambda h: -int(h.product.get("sold_count") or 0)


def search_with_rewrites(search: Callable[[SearchRequest], SearchPage], request: SearchRequest,
                         rewrites: Sequence[str]) -> SearchPage:
    """Run `request` and one request per rewrite (same filters), fuse, and cut the asked page."""
    term_lists: list[tuple[str, ...]] = []
    texts: list[str] = []  # each rewrite as written (what a dense search mode embeds)
    for text in rewrites[:MAX_REWRITES]:
        terms = tuple(query_terms(text))
        if terms and terms != request.terms and terms not in term_lists:
            term_lists.append(terms)
            texts.append(text)
    if not term_lists:
        return search(request)
    depth = max(FUSION_DEPTH, request.offset + request.page_size)
    rewritten = [search(replace(request, terms=t, text=x, page=1, page_size=depth))
                 for t, x in zip(term_lists, texts, strict=True)]
    original = search(replace(request, page=1, page_size=depth))
    pages = [original, *rewritten]
    hits: dict[str, SearchHit] = {}
    for page in pages:
        for h in page.hits:
            hits.setdefault(h.product_id, h)
    if request.sort == SortOrder.default:
        order = fuse_with_original([h.product_id for h in original.hits],
                                   [[h.product_id for h in p.hits] for p in rewritten])
        fused = [hits[p] for p in order]
    else:
        fused = sorted(hits.values(), key=_sort_key(request))
    return SearchPage(hits=fused[request.offset: request.offset + request.page_size], total=len(fused),
                      request=request, relaxed=any(p.relaxed for p in pages),
                      extra={"rewrites": [" ".join(t) for t in term_lists]})


QUERY_REWRITER_ENTRY_POINTS = "shoplab.query_rewriters"


def load_query_rewriter(spec: str) -> QueryRewriter:
    """A `QueryRewriter` for the search's rewrite stage, from the package that provides rewriters.

    Providers declare an entry point in the `shoplab.query_rewriters` group (shoplab's own: the
    `rewrite` package, whose loader takes `rule` or a trained stage folder), so the sandbox and the
    agents name no rewriter package. With several providers installed, write `provider:spec`.
    """
    from importlib.metadata import entry_points

    providers = {ep.name: ep for ep in entry_points(group=QUERY_REWRITER_ENTRY_POINTS)}
    if not providers:
        raise ValueError("no query rewriter is installed (entry point group shoplab.query_rewriters)")
    name, sep, rest = spec.partition(":")
    if sep and name in providers:
        provider, spec = providers[name], rest
    elif len(providers) == 1:
        provider = next(iter(providers.values()))
    else:
        raise ValueError(f"several query rewriters are installed ({', '.join(sorted(providers))}); "
                         "write provider:spec")
    return provider.load()(spec)
