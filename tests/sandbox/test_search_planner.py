"""The tantivy backend's planned match rule: the same pages as the plain rule, with less work.

`SearchBackend.search_sorted_or_relaxed` is the rule as written (each tier one query, counted);
`TantivyBackend.search_sorted_or_relaxed` collects only what a page needs, counts lazily and plans the
filtered some-terms tier by MaxScore. Agents see the planned pages, so they must be the rule's pages.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sandbox.engines.base import SearchBackend, SearchRequest, SortOrder, analyze, query_terms
from sandbox.engines.tantivy_backend import IMPACTS_FILE, TantivyBackend
from tests.es_support import make_test_products

SORTS = (SortOrder.priceasc, SortOrder.pricedesc, SortOrder.order)


@pytest.fixture(scope="module")
def products() -> list[dict[str, Any]]:
    return make_test_products(4000, seed=5)


@pytest.fixture(scope="module")
def tv(tmp_path_factory: pytest.TempPathFactory, products: list[dict[str, Any]]) -> TantivyBackend:
    b = TantivyBackend(tmp_path_factory.mktemp("planner") / "tantivy", create=True)
    # Several commits: several segments, so ties and the strict-tier exclusion cross segment borders.
    for start in range(0, len(products), 1000):
        b.index_products(products[start:start + 1000])
        b._writer.commit()
    b.commit()
    return b


def random_requests(products: list[dict[str, Any]], n: int, seed: int) -> list[SearchRequest]:
    """2-6 words of a title, now and then a word no product holds; filters, pages 1-3, sorts."""
    rng = random.Random(seed)
    vocabulary = sorted({w for p in products for w in analyze(p["title"])})
    out = []
    while len(out) < n:
        p = rng.choice(products)
        words = analyze(p["title"]) + [rng.choice(vocabulary) for _ in range(rng.randint(0, 2))]
        if rng.random() < 0.2:
            words.append("zzqnotaword")
        terms = tuple(query_terms(" ".join(rng.sample(words, min(len(words), rng.randint(2, 6))))))
        req = SearchRequest(terms=terms, page=rng.choice((1, 1, 1, 2, 3)), page_size=rng.choice((5, 10, 10)))
        if rng.random() < 0.7:
            req = replace(req, price_min=round(p["price"] * rng.uniform(0.2, 1.0), 2),
                          price_max=round(p["price"] * rng.uniform(1.0, 5.0), 2))
        if rng.random() < 0.5 and p["service"]:
            req = replace(req, services=tuple(rng.sample(p["service"], 1)))
        if rng.random() < 0.1:
            req = replace(req, shop_id=p["shop_id"])
        if rng.random() < 0.2:
            req = replace(req, sort=rng.choice(SORTS))
        out.append(req)
    return out


def page_of(page) -> tuple[list[str], bool]:
    return [h.product_id for h in page.hits], page.relaxed


def test_planned_pages_are_the_rules_pages(tv: TantivyBackend, products: list[dict[str, Any]]):
    requests = random_requests(products, 600, seed=1)
    differ = []
    pruned = 0
    for req in requests:
        planned, plain = tv.search_sorted_or_relaxed(req), SearchBackend.search_sorted_or_relaxed(tv, req)
        if page_of(planned) != page_of(plain) or planned.total != plain.total:
            differ.append((req, page_of(planned), page_of(plain), planned.total, plain.total))
        if tv.last_plan is not None and tv.last_plan[1]:
            pruned += 1
    assert not differ, differ[:3]
    # The requests exercise the planner: some plans left low-impact words out of the required set.
    assert pruned > 20


def test_scores_are_the_plain_querys(tv: TantivyBackend, products: list[dict[str, Any]]):
    for req in random_requests(products, 100, seed=2):
        if req.sort != SortOrder.default:
            continue
        planned, plain = tv.search_sorted_or_relaxed(req), SearchBackend.search_sorted_or_relaxed(tv, req)
        assert [round(h.score, 4) for h in planned.hits] == [round(h.score, 4) for h in plain.hits]


def build(tmp_path: Path, docs: list[tuple[str, float, list[str]]]) -> TantivyBackend:
    b = TantivyBackend(tmp_path / "tantivy", create=True)
    b.index_products([{"product_id": str(100 + i), "shop_id": "1", "title": title, "price": price,
                       "service": services, "sold_count": i} for i, (title, price, services) in enumerate(docs)])
    b.commit()
    return b


def test_maxscore_leaves_a_low_impact_word_optional(tmp_path: Path):
    """A rare word and a word every product holds: the common word alone cannot reach the top 10, so
    the planned query requires the rare word and only adds the common one's score."""
    docs = [("rare gadget common thing", 10.0, ["COD"]) for _ in range(5)]
    docs += [("rare gadget", 10.0, ["COD"]) for _ in range(25)]
    docs += [(f"common item number{i}", 10.0, ["COD"]) for i in range(2000)]
    b = build(tmp_path, docs)
    req = SearchRequest(terms=("rare", "common"), price_min=1.0, price_max=100.0, services=("COD",))
    page = b.search_sorted_or_relaxed(req)
    assert b.last_plan == (("rare",), ("common",))
    assert page_of(page) == page_of(SearchBackend.search_sorted_or_relaxed(b, req))
    # The 5 products holding both words come first (the all-terms tier), then rare-only ones.
    assert [h.product["title"] for h in page.hits] == ["rare gadget common thing"] * 5 + ["rare gadget"] * 5
    page3 = b.search_sorted_or_relaxed(replace(req, page=3))
    assert [h.product["title"] for h in page3.hits] == ["rare gadget"] * 10
    assert page3.total == 2030


def test_totals_are_counted_only_when_read_and_then_exact(tv: TantivyBackend, products: list[dict[str, Any]]):
    for req in random_requests(products, 150, seed=3):
        planned = tv.search_sorted_or_relaxed(req)
        plain = SearchBackend.search_sorted_or_relaxed(tv, req)
        assert planned.total == plain.total
        any_term = tv.search(replace(req, require_all_terms=False, sort=SortOrder.default, page=1))
        if req.sort == SortOrder.default and len(req.terms) > 1:
            assert planned.total == any_term.total  # both tiers: one list, its length


def test_max_impacts_are_saved_with_the_index_and_ignored_when_stale(tmp_path: Path):
    build(tmp_path, [("red shoe", 5.0, []), ("red red hat", 6.0, []), ("blue shoe", 7.0, [])])
    saved = json.loads((tmp_path / IMPACTS_FILE).read_text())
    assert set(saved["impacts"]) == {"red", "shoe", "hat", "blue"}
    fresh = TantivyBackend(tmp_path / "tantivy")
    for term, value in saved["impacts"].items():
        top = fresh.searcher.search(fresh._term(term), limit=1).hits[0][0]
        assert value == pytest.approx(top) and fresh._impacts[term] == value
    # New documents change the statistics: the saved values are for another index state.
    fresh.index_products([{"product_id": "9", "shop_id": "1", "title": "hat", "price": 1.0, "service": [],
                           "sold_count": 0}])
    fresh._writer.commit()
    fresh._writer = None
    fresh.index.reload()
    fresh._searcher = None
    assert fresh._load_max_impacts() == {}
    assert fresh.max_impact("hat") == pytest.approx(fresh.searcher.search(fresh._term("hat"), limit=1).hits[0][0])


def test_a_word_no_product_holds_changes_nothing_but_the_tier(tmp_path: Path):
    b = build(tmp_path, [("red shoe", 5.0, []), ("red hat", 6.0, []), ("blue shoe", 7.0, [])])
    req = SearchRequest(terms=("red", "zzqnotaword"))
    page = b.search_sorted_or_relaxed(req)
    assert page.relaxed and page.total == 2 and {h.product["title"] for h in page.hits} == {"red shoe", "red hat"}
    assert page_of(page) == page_of(SearchBackend.search_sorted_or_relaxed(b, req))
    sorted_page = b.search_sorted_or_relaxed(replace(req, sort=SortOrder.priceasc))
    assert [h.product["title"] for h in sorted_page.hits] == ["red shoe", "red hat"] and sorted_page.relaxed
