"""find_product's dense and hybrid search modes on a small sandbox (encoder, faiss index, filters, fusion)."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from sandbox.data_model import SEARCH_HIT_FIELDS
from sandbox.dense.build import DenseConfig, build_dense_index
from sandbox.dense.encoder import DenseEncoder, EncoderConfig, product_text
from sandbox.dense.index import service_mask
from sandbox.dense.search import HYBRID_DEPTH, hybrid_search
from sandbox.dense.train import DenseTrainConfig, evaluate, pseudo_query
from sandbox.engines.base import SearchRequest, SortOrder, analyze, query_terms
from sandbox.environment import ShoppingEnv
from sandbox.world import ShoppingWorld


@pytest.fixture(scope="module")
def dense_dir(small_sandbox, tmp_path_factory, one_torch_thread):
    """A copy of the session's small sandbox with a dense index (`shoplab sandbox dense-index`'s path)."""
    import faiss

    faiss.omp_set_num_threads(1)
    data_dir = tmp_path_factory.mktemp("dense") / "sb"
    shutil.copytree(small_sandbox, data_dir)
    world = ShoppingWorld.open(data_dir)
    try:
        build_dense_index(world, DenseConfig(train=DenseTrainConfig(max_epochs=4)), progress=False)
    finally:
        world.close()
    return data_dir


@pytest.fixture(scope="module")
def worlds(dense_dir):
    opened = {mode: ShoppingWorld.open(dense_dir, search_mode=mode) for mode in ("bm25", "dense", "hybrid")}
    yield opened
    for w in opened.values():
        w.close()


def _golds(world, n):
    ids = list(dict.fromkeys(s.product_id for t in world.tasks.values() for s in t.reward))
    found = world.products(ids)
    return [found[i] for i in ids if i in found][:n]


def test_manifest_records_the_dense_build(dense_dir):
    dense = json.loads((dense_dir / "manifest.json").read_text())["dense"]
    assert dense["n_products"] == 5000 and dense["seconds"] > 0 and dense["peak_rss_mb"] > 0
    assert dense["kind"] == "hnsw"


def test_trained_encoder_beats_an_untrained_one(worlds):
    """Products never trained on (task golds): their own pseudo-queries find them among 400 products."""
    world = worlds["dense"]
    products = _golds(world, 400)
    rng = random.Random("test")
    queries = [pseudo_query(p, rng) for p in products]
    trained = evaluate(world.dense.encoder, queries, products)
    untrained = evaluate(DenseEncoder(EncoderConfig(), seed=0), queries, products)
    assert trained["recall@10"] >= untrained["recall@10"] + 0.1, (trained, untrained)
    assert trained["loss"] < untrained["loss"]


def _misspelt(title: str) -> str | None:
    """Each long title word without its last letter: no token of the query is in the product."""
    words = [w for w in dict.fromkeys(analyze(title)) if len(w) >= 6 and w.isalpha()][:4]
    return " ".join(w[:-1] for w in words) if len(words) >= 3 else None


def test_dense_finds_products_by_words_bm25_cannot_match(worlds):
    """Misspelt queries (every word one letter short): BM25 matches no token, the character trigrams do."""
    found = {"bm25": 0, "dense": 0}
    n = 0
    for p in _golds(worlds["bm25"], 300):
        q = _misspelt(p["title"])
        if q is None:
            continue
        n += 1
        request = SearchRequest(terms=tuple(query_terms(q)), page_size=10, text=q)
        for mode in found:
            found[mode] += p["product_id"] in [h.product_id for h in worlds[mode].search(request).hits]
    assert n >= 30
    assert found["bm25"] <= 0.1 * n, found
    assert found["dense"] >= 0.4 * n, (found, n)


def _passes(p, low, high, services, shop):
    return ((low is None or p["price"] >= low) and (high is None or p["price"] <= high)
            and set(services) <= set(p["service"]) and (shop is None or p["shop_id"] == shop))


@pytest.mark.parametrize("exact_below", [20_000, 0])  # exact over the kept rows; the HNSW walk with a bitmap
def test_filters_are_applied_inside_the_dense_search(worlds, exact_below):
    world = worlds["dense"]
    index = world.dense
    saved = index.cfg.exact_below
    index.cfg.exact_below = exact_below
    try:
        golds = _golds(world, 40)
        for i, g in enumerate(golds):
            low, high = round(g["price"] * 0.5, 2), round(g["price"] * 2.0, 2)
            services = tuple(g["service"][:1])
            shop = g["shop_id"] if i % 4 == 0 else None
            q = " ".join(g["title"].split()[:3])
            request = SearchRequest(terms=tuple(query_terms(q)), text=q, price_min=low, price_max=high,
                                    services=services, shop_id=shop, page_size=50)
            page = world.search(request)
            assert page.hits, q
            assert all(_passes(h.product, low, high, services, shop) for h in page.hits), q
            if shop is not None:  # a shop's ~few products: every passing one is returned
                assert page.total == len(page.hits) <= 50
    finally:
        index.cfg.exact_below = saved


def test_a_filter_that_keeps_few_products_still_returns_them(worlds):
    world = worlds["dense"]
    index = world.dense
    # The 5 cheapest products offering COD and flashsale: price and services keep only them.
    services = ("COD", "flashsale")
    m = service_mask(services)
    rows = np.flatnonzero((index.services & m) == m)
    assert len(rows) >= 5
    cheapest = rows[np.argsort(index.price[rows], kind="stable")[:5]]
    high = float(index.price[cheapest].max())
    expected = {index.product_id(r) for r in rows if index.price[r] <= high}
    request = SearchRequest(terms=("zzz", "unrelated"), text="zzz unrelated", services=services,
                            price_max=high, page_size=50)
    page = world.search(request)
    assert {h.product_id for h in page.hits} == expected and page.total == len(expected)


def test_hybrid_fuses_both_lists(worlds):
    """Plain RRF mixes both lists into the first page; the default (dense weight 0.2) re-ranks BM25's list
    by the dense list's agreement and fills from the dense list where BM25 finds too little."""
    index, backend = worlds["dense"].dense, worlds["bm25"].backend
    both = reordered = 0
    for g in _golds(worlds["bm25"], 30):
        q = " ".join(g["title"].split()[:4])
        request = SearchRequest(terms=tuple(query_terms(q)), text=q, page_size=20)
        deep = replace(request, page_size=HYBRID_DEPTH)
        lexical_list = [h.product_id for h in worlds["bm25"].search(deep).hits]
        lexical, dense = set(lexical_list), {h.product_id for h in worlds["dense"].search(deep).hits}
        plain = [h.product_id for h in hybrid_search(index, backend, request, dense_weight=1.0).hits]
        weighted = [h.product_id for h in worlds["hybrid"].search(request).hits]
        assert set(plain) <= lexical | dense and set(weighted) <= lexical | dense
        both += bool(set(plain) & (lexical - dense)) and bool(set(plain) & (dense - lexical))
        reordered += weighted != lexical_list[:20]
    assert both >= 5 and reordered >= 10, (both, reordered)
    # A misspelt query BM25 finds nothing for: the hybrid page is the dense one.
    texts = [t for t in (_misspelt(g["title"]) for g in _golds(worlds["bm25"], 100)) if t]
    requests = [SearchRequest(terms=tuple(query_terms(t)), text=t, page_size=10) for t in texts]
    request = next(r for r in requests if not worlds["bm25"].search(r).hits)
    dense_page = [h.product_id for h in worlds["dense"].search(request).hits]
    assert dense_page and [h.product_id for h in worlds["hybrid"].search(request).hits] == dense_page


def test_hnsw_recall_against_exact_search(worlds):
    index = worlds["dense"].dense
    rng = random.Random(1)
    products = _golds(worlds["dense"], 200)
    recalls = []
    for p in products:
        q = index.encoder.encode_query(pseudo_query(p, rng))
        approx, _ = index.search_vector(q, SearchRequest(terms=("x",)), 10)
        exact, _ = index.search_vector(q, SearchRequest(terms=("x",)), 10, exact=True)
        recalls.append(len({r for r, _ in approx} & {r for r, _ in exact}) / 10)
    assert np.mean(recalls) >= 0.9


def test_save_load_round_trip_and_stored_vectors(worlds, tmp_path):
    enc = worlds["dense"].dense.encoder
    enc.save(tmp_path / "enc")
    again = DenseEncoder.load(tmp_path / "enc")
    texts = ["red phone case", "wireless earbuds for my sister", "ÄÖÜ 漢字 t-shirt"]
    for tower in ("q", "p"):
        assert np.array_equal(enc.encode_texts(texts, tower), again.encode_texts(texts, tower))
    index = worlds["dense"].dense
    row = 17
    product = worlds["dense"].products([index.product_id(row)])[index.product_id(row)]
    assert np.allclose(index.xb[row], again.encode_products([product])[0], atol=1e-5)
    assert product_text(product)


def test_dense_mode_without_an_index_is_a_readable_error(small_sandbox):
    with pytest.raises(FileNotFoundError, match="dense-index"):
        ShoppingWorld.open(small_sandbox, search_mode="dense")
    with pytest.raises(ValueError, match="unknown search mode"):
        ShoppingWorld.open(small_sandbox, search_mode="semantic")
    from shoplab_cli import app

    out = CliRunner().invoke(app, ["sandbox", "search", "--data-dir", str(small_sandbox), "wheel",
                                   "--search-mode", "hybrid"])
    assert out.exit_code == 1 and "dense-index" in out.output
    wrong = CliRunner().invoke(app, ["sandbox", "build", "--data-dir", str(small_sandbox / "x"), "--tasks",
                                     str(small_sandbox / "tasks.jsonl"), "--set", "index.kind=flat"])
    assert wrong.exit_code == 2 and "--dense" in wrong.output


CALLS = [
    {"q": "rubber wheel"},
    {"q": "hi i need a phone case for my sister", "price": "10-500", "service": "COD"},
    {"q": "water bottle", "sort": "priceasc", "page": 2},
    {"q": "bag", "sort": "order", "service": "official,freeShipping"},
    {"q": "shoes", "price": "0-0.01"},
]


def test_observation_format_is_the_same_in_every_mode(worlds):
    shapes = {}
    for mode, world in worlds.items():
        env = ShoppingEnv(world)
        rows = []
        for args in CALLS:
            r = env.step("find_product", args)
            assert r.ok, (mode, args, r.observation)
            if r.data:
                assert all(tuple(item) == SEARCH_HIT_FIELDS for item in r.data)
                assert json.loads(r.observation) == r.data
                assert [type(v).__name__ for v in r.data[0].values()] == ["str", "str", "str", "float", "list", "int"]
                if args.get("sort") == "priceasc":
                    prices = [item["price"] for item in r.data]
                    assert prices == sorted(prices)
            rows.append("data" if r.data else r.observation.split(".")[0])
        shapes[mode] = rows
    assert shapes["bm25"] == shapes["dense"] == shapes["hybrid"], shapes
    assert shapes["bm25"][-1] == "No products found"


def test_bm25_mode_is_the_engine_search(worlds):
    world = worlds["bm25"]
    request = SearchRequest(terms=("rubber", "wheel"), text="rubber wheel", sort=SortOrder.priceasc, price_max=500)
    a = world.search(request)
    b = world.backend.search_sorted_or_relaxed(replace(request, text=""))
    assert [h.product_id for h in a.hits] == [h.product_id for h in b.hits] and a.total == b.total
