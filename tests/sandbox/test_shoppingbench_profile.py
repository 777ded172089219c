"""The `shoppingbench` profile answers as ShoppingBench's own client and server do.

A parity suite written from upstream's published rules (restated in sandbox/shoppingbench_profile.py
and sandbox/engines/lucene_bm25.py): the argument table, the observation format, the top-50 → filter
→ sort pipeline, id parsing, and Lucene's analysis and BM25. Agreement with real Pyserini is
measured by tests/sandbox/test_peer_lucene.py and benchmarks/peer_lucene.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sandbox import ShoppingEnv
from sandbox.engines.lucene_bm25 import (
    LuceneBM25Builder,
    LuceneBM25Index,
    RankedFilter,
    length_to_norm,
    lucene_english_tokens,
    norm_to_length,
)


# -- analysis -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, tokens", [
    ("Men's Running Shoes", ["men", "run", "shoe"]),
    ("the bottle of water for a baby", ["bottl", "water", "babi"]),  # Lucene's 33 stop words go
    ("3.5mm jack, 1,000 pcs", ["3.5mm", "jack", "1,000", "pc"]),  # digits join across . and ,
    ("wi-fi/bluetooth", ["wi", "fi", "bluetooth"]),
    ("U.S.A. made", ["u.s.a", "made"]),
    ("Batteries rechargeable", ["batteri", "recharg"]),
    ("possibly", ["possibl"]),  # Martin Porter's C version (Lucene's), not Snowball's "possibli"
    ("Kid’s TOYS", ["kid", "toi"]),
])
def test_lucene_english_analysis(text, tokens):
    assert lucene_english_tokens(text) == tokens


def test_an_over_long_token_is_cut_into_pieces_of_255():
    assert [len(t) for t in lucene_english_tokens("x" * 600)] == [255, 255, 90]


def test_length_norms_are_lucenes_one_byte_encoding():
    assert [norm_to_length(length_to_norm(n)) for n in range(24)] == list(range(24))  # exact below 24
    assert norm_to_length(length_to_norm(100)) == 96  # then 4 significant bits
    decoded = [norm_to_length(length_to_norm(n)) for n in range(1, 5000)]
    assert decoded == sorted(decoded) and all(d <= n for d, n in zip(decoded, range(1, 5000), strict=True))


# -- BM25, against a plain restatement of Lucene's formula ---------------------------------------------
def _index(tmp_path, titles: list[str]) -> LuceneBM25Index:
    builder = LuceneBM25Builder()
    builder.add({"product_id": f"p{i}", "shop_id": f"s{i % 2}", "title": t, "price": 10.0 * (i + 1),
                 "sold_count": i, "service": ["COD"] if i % 2 else []} for i, t in enumerate(titles))
    builder.save(tmp_path / "bm25")
    return LuceneBM25Index(tmp_path / "bm25")


def _reference_ranking(titles: list[str], query: str, k1=0.9, b=0.4, quantize=True, boost=True) -> list[int]:
    docs = [lucene_english_tokens(t) for t in titles]
    n = sum(1 for d in docs if d)
    avgdl = np.float32(sum(len(d) for d in docs) / n)
    q = lucene_english_tokens(query)
    terms = {t: (q.count(t) if boost else 1) for t in q}
    scores = []
    for i, d in enumerate(docs):
        dl = norm_to_length(length_to_norm(len(d))) if quantize else len(d)
        total = 0.0
        for t, count in terms.items():
            tf = d.count(t)
            if not tf:
                continue
            df = sum(t in other for other in docs)
            w = np.float32(count) * np.float32(math.log(1 + (n - df + 0.5) / (df + 0.5)))
            ninv = np.float32(1) / (np.float32(k1) * (np.float32(1 - b) + np.float32(b) * np.float32(dl) / avgdl))
            total += float(w - w / (np.float32(1) + np.float32(tf) * ninv))
        if total > 0:
            scores.append((-np.float32(total), f"p{i}", i))  # ties: the product id as a string
    return [i for _, _, i in sorted(scores)]


TITLES = [
    "red shoe",
    "red running shoe shoe shoe for trail and road with extra grip and many more words in it",
    "blue shoe",
    "red red red dress",
    "shoe rack",
    "red shoe " + "filler " * 98,  # 100 tokens: the same one-byte norm as 97 below
    "red shoe " + "filler " * 95,  # 97 tokens
    "shoe shoe red",
]


@pytest.mark.parametrize("query", ["red shoe", "red red shoe", "red", "running shoes", "dress dress rack"])
def test_bm25_ranks_as_lucenes_formula(tmp_path, query):
    index = _index(tmp_path, TITLES)
    assert index.ranked(query, limit=50) == _reference_ranking(TITLES, query)


def test_bm25_parameters_query_boosts_and_length_norms_each_matter(tmp_path):
    """Each fidelity mechanism changes some ranking here: Pyserini's k1/b, repeated query words
    weighing more, and lengths rounded to one byte (then the product id breaks the tie)."""
    index = _index(tmp_path, TITLES)
    assert _reference_ranking(TITLES, "red shoe", k1=1.2, b=0.75) != index.ranked("red shoe")
    assert _reference_ranking(TITLES, "red red shoe", boost=False) != index.ranked("red red shoe")
    assert _reference_ranking(TITLES, "red shoe", quantize=False) != index.ranked("red shoe")
    ranked = index.ranked("red shoe")
    assert ranked.index(5) < ranked.index(6)  # equal scores: the smaller product id first


def test_filters_apply_after_ranking_and_the_hit_cap_comes_first(tmp_path):
    index = _index(tmp_path, TITLES)
    everything = index.ranked("shoe red", limit=50)
    cod = index.ranked("shoe red", RankedFilter(services=("COD",)), limit=50)
    assert cod == [d for d in everything if d % 2]
    assert index.ranked("shoe red", RankedFilter(shop_id="s0"), limit=50) == [d for d in everything if d % 2 == 0]
    # Upstream looks at Lucene's top 100,000 hits only; with a cap of 2 only those two are filtered.
    assert index.ranked("shoe red", RankedFilter(services=("COD",)), cap=2) == [d for d in everything[:2] if d % 2]
    assert index.ranked("shoe red", RankedFilter(price_low=float("nan")), limit=50) == everything


# -- the tools, on a built sandbox --------------------------------------------------------------
@pytest.fixture(scope="module")
def env(world):
    return ShoppingEnv(world, profile="shoppingbench")


def _find(env, **args):
    result = env.step("find_product", args)
    assert result.ok or result.data is None
    return result.data


def _ids(rows):
    return [r["product_id"] for r in rows]


QUERY = "stainless steel water bottle"


@pytest.mark.parametrize("changed, same_as", [
    ({"price": "abc"}, {}), ({"price": "1,000-2,000"}, {}), ({"price": "100"}, {}),
    ({"service": "official, COD"}, {"service": "official"}), ({"service": "galactic"}, {}),
    ({"service": "default"}, {}), ({"sort": "cheapest"}, {}), ({"sort": "default"}, {}), ({"shop_id": ""}, {}),
    ({"page": "1"}, {"page": 1}), ({"extra": 5}, {}),
])
def test_arguments_upstream_ignores(env, changed, same_as):
    base = {"q": QUERY, "page": 1}
    assert _find(env, **{**base, **changed}) == _find(env, **{**base, **same_as})
    assert _find(env, **base)  # the comparison is not between two empty pages


@pytest.mark.parametrize("args", [
    {"page": 0}, {"page": 6}, {"page": 1.0}, {"page": True}, {"page": None}, {"price": "500-100"},
    {"shop_id": "None"}, {"q": ""}, {"q": "the of and"},
])
def test_arguments_upstream_answers_with_no_products(env, args):
    assert _find(env, **{"q": QUERY, "page": 1, **args}) == []


@pytest.mark.parametrize("args", [{"q": QUERY}, {"page": 1}, {"q": 5, "page": 1}, {"q": ["a"], "page": 1}])
def test_a_call_upstream_fails_reads_null(env, args):
    result = env.step("find_product", args)
    assert result.data is None and result.observation == "null"


def test_a_long_query_is_searched_not_refused(env):
    assert _find(env, q=(QUERY + " ") * 40, page=1)  # 1,160 characters: shoplab's profile refuses over 500


def test_sorting_reorders_the_first_fifty_filtered_relevance_hits(env):
    relevance = [r for p in range(1, 6) for r in _find(env, q=QUERY, page=p, price="0-5000")]
    assert 0 < len(relevance) <= 50
    for sort, key, reverse in (("priceasc", "price", False), ("pricedesc", "price", True),
                               ("order", "sold_count", True)):
        ordered = [r for p in range(1, 6) for r in _find(env, q=QUERY, page=p, price="0-5000", sort=sort)]
        assert sorted(_ids(ordered)) == sorted(_ids(relevance))
        assert ordered == sorted(relevance, key=lambda r, k=key: r[k], reverse=reverse)  # stable, as Python's


def test_filters_hold_on_every_hit(env):
    rows = _find(env, q="bottle", page=1, price="100-900", service="COD,freeShipping")
    assert rows and all(100 <= r["price"] <= 900 and {"COD", "freeShipping"} <= set(r["service"]) for r in rows)
    shop = rows[0]["shop_id"]
    assert {r["shop_id"] for r in _find(env, q="bottle", page=1, shop_id=shop)} == {shop}
    assert list(rows[0]) == ["product_id", "shop_id", "title", "price", "service", "sold_count"]


def test_observations_are_serialised_as_upstream_does(env):
    result = env.step("find_product", {"q": QUERY, "page": 1})
    assert result.observation.startswith('[{"product_id":"') and ", " not in result.observation[:40]
    slash = next((r for r in result.data if "/" in r["title"]), None)
    if slash is not None:
        assert "\\/" in result.observation
    assert env.step("find_product", {"q": "zzzzqqq", "page": 1}).observation == "[]"
    info = env.step("view_product_information", {"product_ids": result.data[0]["product_id"]})
    assert list(info.data[0]) == ["product_id", "short_description", "description", "sku_options", "attributes"]
    assert len(info.data[0]["description"]) <= 2000
    assert all(ord(c) < 128 for c in info.observation)  # non-ASCII as \\uXXXX


def test_ids_are_split_at_commas_untrimmed(env):
    hits = _find(env, q=QUERY, page=1)
    a, b = hits[0]["product_id"], hits[1]["product_id"]
    info = env.step("view_product_information", {"product_ids": f"{a}, {b},{b}"})
    assert _ids(info.data) == [a, b]  # " b" is no product; unknown ids are left out, not refused
    many = ",".join(_ids(hits) * 3)  # 30 ids: no limit of 20 upstream
    assert len(env.step("view_product_information", {"product_ids": many}).data) == 30


def test_recommendations_keep_upstreams_ids_and_scores_agree(world):
    """A shop task answered with ", "-separated gold ids succeeds under shoplab's profile and fails
    under ShoppingBench's (whose evaluator does not trim ids); an unknown id is still recorded."""
    task = next(t for t in world.tasks.values() if t.intent.value == "shop")
    gold = [spec.product_id for spec in task.reward]
    answer = ", ".join(gold)
    verdicts = {}
    for profile in ("shoplab", "shoppingbench"):
        env = ShoppingEnv(world, task, profile=profile)
        result = env.step("recommend_product", {"product_ids": answer})
        assert result.ok
        verdicts[profile] = env.score().success
    assert verdicts == {"shoplab": True, "shoppingbench": False}
    env = ShoppingEnv(world, task, profile="shoppingbench")
    r = env.step("recommend_product", {"product_ids": f"{gold[0]},nope"})
    assert r.observation == f'"Having recommended the products to the user: {gold[0]},nope."'
    assert env.state.recommended == [gold[0], "nope"] and env.state.recommend_calls == 1


def test_the_profile_bounds_calls_not_turns_and_never_reads_an_error(world):
    env = ShoppingEnv(world, profile="shoppingbench")
    assert env.max_steps == 300  # 30 model turns; the agent counts the turns
    bad = env.step("find_product", "{not json")
    assert not bad.ok and bad.observation == "null"
    done = env.step("terminate", {})
    assert done.observation == "null" and env.state.done
    with pytest.raises(ValueError, match="unknown profile"):
        ShoppingEnv(world, profile="webshop")


def test_the_server_answers_as_upstreams_service_under_the_profile(world):
    from fastapi.testclient import TestClient

    from sandbox.server import create_app

    upstream = TestClient(create_app(world, profile="shoppingbench"))
    shoplab = TestClient(create_app(world))
    env = ShoppingEnv(world, profile="shoppingbench")
    query = {"q": QUERY, "page": "1", "price": "1,000-2,000", "service": "official, COD"}
    answer = upstream.get("/find_product", params=query)
    assert answer.status_code == 200 and answer.json() == env.step("find_product", query).data
    assert shoplab.get("/find_product", params=query).status_code == 422  # shoplab explains the bad price
    assert upstream.get("/find_product", params={"q": QUERY, "page": "6"}).json() == []
    assert upstream.get("/find_product", params={"q": QUERY}).json() == []  # no page: the service's []
    ids = ",".join(r["product_id"] for r in answer.json()[:2])
    assert len(upstream.get("/view_product_information", params={"product_ids": ids + ", x"}).json()) == 2
    episode = upstream.post("/episodes", json={}).json()
    step = upstream.post(f"/episodes/{episode['episode_id']}/step",
                         json={"tool": "find_product", "arguments": {"q": QUERY}}).json()
    assert step["observation"] == "null"  # episodes run under the server's profile


def test_equal_scores_are_ordered_by_product_id_as_a_string_not_by_index_order(tmp_path):
    """Anserini sorts equal scores by the id field as a string: "p10" before "p9", whichever came first."""
    builder = LuceneBM25Builder()
    builder.add({"product_id": pid, "shop_id": "s", "title": "red shoe", "price": 1.0} for pid in ("p9", "p10"))
    builder.save(tmp_path / "bm25")
    index = LuceneBM25Index(tmp_path / "bm25")
    assert [index.product_id(d) for d in index.ranked("red shoe")] == ["p10", "p9"]
    assert [index.product_id(d) for d in index.ranked("red shoe", limit=1)] == ["p10"]  # at the cut too
