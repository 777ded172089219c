"""Query rewriting pieces a user relies on: cleaning, rules, long-tail data, partial orders, fusion."""

from __future__ import annotations

import pytest

from rewrite import (
    LongTailGenerator,
    LongTailQuery,
    RuleRewriter,
    clean_rewrite,
    partial_order,
    preference_rows,
)
from rewrite.cleaning import MAX_REWRITE_CHARS, MAX_REWRITE_WORDS
from rewrite.model import distinct_rewrites
from sandbox import SearchRequest, ShoppingEnv, analyze, query_terms
from sandbox.rewrite_stage import (
    fuse_with_original,
    reciprocal_rank_fusion,
    search_with_rewrites,
    weighted_rrf,
)


def test_clean_rewrite_keeps_one_bounded_line_of_plain_words():
    assert clean_rewrite('Rewrite: "Black iPhone 13 case"\nExplanation: ...') == "Black iPhone 13 case"
    assert clean_rewrite("product words: a, b; drop: c; rewrite: red wool scarf") == "red wool scarf"
    hostile = 'title:(phone OR "x") AND price:[0 TO *] <script>alert(1)</script> {"q": 1}'
    out = clean_rewrite(hostile)
    assert not set(out) & set(':()"[]*<>{}')
    long = " ".join(f"word{i}" for i in range(50))
    assert len(clean_rewrite(long).split()) == MAX_REWRITE_WORDS
    assert len(clean_rewrite("x" * 30 + " " + "y" * 90)) <= MAX_REWRITE_CHARS
    assert clean_rewrite("case Case CASE cover") == "case cover"
    assert clean_rewrite("") == "" and clean_rewrite("   \n\n ") == "" and clean_rewrite("?!") == ""
    # Beam candidates that differ only in case or junk are one candidate to the engine.
    assert distinct_rewrites(["30m Outdoor", "30m outdoor", "", "??", "30m cable"]) == ["30m Outdoor", "30m cable"]


def test_rule_rewriter_drops_talk_price_and_service_phrases():
    r = RuleRewriter()
    out = r.rewrite("Hi! I'm looking for a waterproof hiking backpack for my brother under 1,500 pesos "
                    "with free shipping")
    assert out.split() == ["waterproof", "hiking", "backpack"]
    assert r("the a of") == []  # nothing left: no rewrite rather than an empty query
    cands = r.candidates("need a red leather wallet between 200 and 400 php, cash on delivery please")
    assert cands == ["red leather wallet"]  # 3, 5 and 8 words of a 3-word request are one candidate
    assert all(not set(c.split()) & {"php", "200", "delivery"} for c in r.candidates(
        "hey i want a big heavy duty stainless steel kitchen knife set under 900 php with free shipping"))


def test_long_tail_queries_are_deterministic_and_carry_their_gold_and_wishes(world):
    products = world.filler_products(60, start=10)
    a = LongTailGenerator(seed=3).generate(products)
    b = LongTailGenerator(seed=3).generate(products)
    assert [q.query for q in a] == [q.query for q in b] and len(a) >= 50
    by_id = {p["product_id"]: p for p in products}
    assert {q.style for q in a} == {"colloquial", "paraphrase", "drop", "swap", "attribute", "shoppingbench"}
    for q in a:
        gold = by_id[q.gold_ids[0]]
        # Every wish written into the query is one the gold product meets.
        assert q.satisfied(gold) == 1.0
        assert set(analyze(q.mined_rewrite)) <= set(analyze(gold["title"] + " " + str(gold)))
    assert LongTailQuery.from_dict(a[0].as_dict()) == a[0]
    with pytest.raises(ValueError, match="unknown long-tail styles"):
        LongTailGenerator(styles=("poetry",))


def test_filler_products_are_in_the_index_and_never_task_golds(world):
    products = world.filler_products(40, start=100)
    assert len(world.products([p["product_id"] for p in products])) == 40
    golds = {s.product_id for t in world.tasks.values() for s in t.reward if s.product_id}
    assert not golds & {p["product_id"] for p in products}
    assert world.filler_products(10, start=10**9) == []


def test_partial_order_from_known_scores_has_ties_as_equal_levels():
    assert partial_order([0.2, 0.9, 0.5]) == [2, 0, 1]
    assert partial_order([0.5, 0.5, 0.1, 0.50001]) == [0, 0, 1, 0]
    assert partial_order([1.0, 1.0]) == [0, 0]
    assert partial_order([]) == []


def test_preference_rows_follow_the_partial_order():
    records = [
        {"query": "q1", "usable": True, "candidates": [
            {"rewrite": "a", "reward": 0.1, "level": 2}, {"rewrite": "b", "reward": 0.9, "level": 0},
            {"rewrite": "c", "reward": 0.5, "level": 1}, {"rewrite": "d", "reward": 0.5, "level": 1}]},
        {"query": "q2", "usable": False, "candidates": [{"rewrite": "x", "reward": 0.3, "level": 0}]},
    ]
    pro, dpo = preference_rows(records, lambda q: [{"role": "user", "content": q}], max_pairs=3)
    assert len(pro) == 1 and pro[0]["completions"] == ["a", "b", "c", "d"] and pro[0]["rewards"][1] == 0.9
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in dpo] == [("b", "c"), ("b", "a")]
    _, capped = preference_rows(records, lambda q: q, max_pairs=1)
    assert len(capped) == 1


def test_reciprocal_rank_fusion_rule():
    # p2 is in both lists and rises above both first places; ties go to the first list.
    assert reciprocal_rank_fusion([["p1", "p2"], ["p3", "p2"]]) == ["p2", "p1", "p3"]
    assert reciprocal_rank_fusion([["a"], ["b"]]) == ["a", "b"]
    assert reciprocal_rank_fusion([]) == []
    # Weights scale each list's votes: the second list's first place wins at twice the weight.
    assert [p for p, _ in weighted_rrf([["a"], ["b"]], (1.0, 2.0))] == ["b", "a"]
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        weighted_rrf([["a"]], (1.0, 2.0))


def test_the_original_query_keeps_its_first_hit_unless_a_product_has_both_lists_support():
    # A rewrite's first hit (r1) ties the query's own first hit (o1): the query's words win the tie, and the
    # rewrite's hit still lands second, in the page the agent reads.
    assert fuse_with_original(["o1", "o2", "o3"], [["r1", "r2"]])[:2] == ["o1", "r1"]
    # A product both lists retrieve outranks either first hit.
    assert fuse_with_original(["o1", "both"], [["r1", "both"]])[0] == "both"
    # With several rewrites, their lists follow the original's, in their order.
    assert fuse_with_original(["o1"], [["r1"], ["r2"]]) == ["o1", "r1", "r2"]


def test_the_deployed_search_and_the_judge_fuse_by_the_same_rule(world, similarity):
    """The feedback's hit@k and the eval's score the list the agent sees: same products, same order."""
    judge = _judge(world, similarity, 0.0)
    query, rewrite = "blue cotton shirt for men", "phone case"

    def top(text):
        return [h.product_id for h in world.search(SearchRequest(terms=tuple(query_terms(text)), page_size=50)).hits]

    page = search_with_rewrites(world.search, SearchRequest(terms=tuple(query_terms(query)), page_size=50), [rewrite])
    assert [h.product_id for h in page.hits] == judge.fused_ids(query, [rewrite])
    # The two lists share no product, so every score ties a rank of the other list: the query's first hit stays
    # first and the rewrite's comes second.
    assert not set(top(query)) & set(top(rewrite))
    assert [h.product_id for h in page.hits[:2]] == [top(query)[0], top(rewrite)[0]]


def test_rewrite_stage_finds_what_the_long_query_misses(world):
    gold = world.filler_products(1, start=321)[0]
    title_words = [w for w in query_terms(gold["title"]) if not w.isdigit()][:4]
    noisy = "hello there i would really love some help finding " + " ".join(title_words[:1]) + \
        " something nice maybe blue or green for weekend"
    request = SearchRequest(terms=tuple(query_terms(noisy)), page_size=10)
    plain = [h.product_id for h in world.search(request).hits]
    rewrite = gold["title"]  # the strongest rewrite there is: the seller's own words
    fused_page = search_with_rewrites(world.search, request, [rewrite])
    fused = [h.product_id for h in fused_page.hits]
    assert gold["product_id"] in fused
    assert fused_page.extra["rewrites"] == [" ".join(query_terms(rewrite))]
    assert len(fused) == 10 and len(set(fused)) == 10
    if gold["product_id"] in plain:
        assert fused.index(gold["product_id"]) <= plain.index(gold["product_id"]) + 1


def test_env_search_uses_the_rewriter_and_survives_a_broken_one(world):
    seen: list[str] = []

    def rewriter(q):
        seen.append(q)
        return ["title:(x OR y) AND price:[0 TO *]", "phone case"]

    env = ShoppingEnv(world, query_rewriter=rewriter)
    r = env.step("find_product", {"q": "i want something for my phone", "sort": "priceasc"})
    assert r.ok and seen == ["i want something for my phone"]
    prices = [p["price"] for p in r.data]
    assert prices == sorted(prices)

    def broken(q):
        raise RuntimeError("model server down")

    env = ShoppingEnv(world, query_rewriter=broken)
    r = env.step("find_product", {"q": "phone case"})
    assert r.ok and r.data


def _judge(world, similarity, w_fact: float):
    from rewrite import RetrievalJudge, RewardWeights

    return RetrievalJudge(world, similarity, weights=RewardWeights(fact=w_fact), fact_share=0.01)


def test_fact_words_are_the_rare_catalogue_words_outside_price_and_service_phrases(world, similarity):
    judge = _judge(world, similarity, 0.0)
    limit = 0.01 * world.backend.count()
    rare = next(t for p in world.filler_products(400, start=50) for t in query_terms(p["title"])
                if not t.isdigit() and 0 < judge.document_frequency(t) <= limit)
    common = max(("black", "set", "for", "new"), key=judge.document_frequency)
    assert judge.document_frequency(common) > limit
    facts = judge.fact_words(f"hi i need a {common} {rare} zzqqxunknownword under 500 pesos with free shipping")
    assert facts == [rare]  # not the common word, nor a word no product holds, nor the price or service
    assert judge.fact_dropped(f"{common} {rare}", f"{common}") == 1.0
    assert judge.fact_dropped(f"{common} {rare}", f"{rare}") == 0.0
    assert judge.fact_dropped(f"{common} {rare}", "") == 0.0  # no rewrite drops nothing


def test_the_fact_word_penalty_ranks_a_rewrite_that_drops_them_lower(world, similarity):
    """The partial order that keeps the query's fact words: with w_fact the reward of a rewrite falls by
    w_fact times the share of fact words it drops; without, the two rewards are BEQUE's own."""
    plain, keeping = _judge(world, similarity, 0.0), _judge(world, similarity, 0.5)
    product = world.filler_products(1, start=7)[0]
    words = query_terms(product["title"])
    q = LongTailQuery(query=" ".join(words), gold_ids=[product["product_id"]], style="drop")
    facts = keeping.fact_words(q.query)
    assert facts, "the product's title should hold a rare word"
    dropping = " ".join(w for w in words if w not in facts) or "item"
    for rewrite, dropped in ((dropping, 1.0), (" ".join(words), 0.0)):
        a, b = plain.score(q, rewrite), keeping.score(q, rewrite)
        assert a.fact_dropped == b.fact_dropped == dropped
        assert b.reward == pytest.approx(a.reward - 0.5 * dropped, abs=1e-5)


def test_feedback_headroom_reports_what_ranking_the_candidates_could_win():
    from rewrite import feedback_headroom

    records = [
        {"candidates": [{"gold_rank": 30, "reward": 0.2}, {"gold_rank": 3, "reward": 0.9}]},
        {"candidates": [{"gold_rank": 1, "reward": 0.8, "fact_dropped": 0.5}, {"gold_rank": None, "reward": 0.1}]},
        {"candidates": [{"gold_rank": None, "reward": 0.3}, {"gold_rank": 8, "reward": 0.2}]},
    ]
    h = feedback_headroom(records)
    assert h["top_candidate_hit@10"] == pytest.approx(1 / 3, abs=1e-4)
    assert h["best_reward_candidate_hit@10"] == pytest.approx(2 / 3, abs=1e-4)
    assert h["any_candidate_hit@10"] == 1.0 and h["mean_candidates"] == 2.0
    assert h["mean_fact_dropped"] == pytest.approx(0.5 / 6, abs=1e-4)
