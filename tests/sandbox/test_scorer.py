"""ShoppingBench's scoring rules, checked on hand-built products (data/README: "How ShoppingBench scores")."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from sandbox.data_model import SERVICES
from sandbox.scorer import (
    TITLE_THRESHOLD,
    WEB_TITLE_THRESHOLD,
    budget_satisfied,
    parse_recommendation,
    pass_hat_k,
    score_episode,
    score_product,
)
from sandbox.tasks import ProductSpec, TaskVoucher, parse_task


class DictSimilarity:
    """Title similarity from a table: identical strings 1.0, listed pairs their value, anything else 0."""

    def __init__(self, table: dict[tuple[str, str], float] | None = None):
        self.table = dict(table or {})
        self.calls: list[tuple[str, str]] = []

    def __call__(self, a: str, b: str) -> float:
        self.calls.append((a, b))
        if a == b:
            return 1.0
        return self.table.get((a, b), self.table.get((b, a), 0.0))


SIM = DictSimilarity()


def product(pid="P1", title="Gold Title", price=100.0, shop_id="S1", service=(), attributes=None,
            sku_options=None, description=""):
    return {"product_id": pid, "shop_id": shop_id, "title": title, "price": price, "service": list(service),
            "attributes": attributes or {}, "sku_options": sku_options or {}, "description": description}


def spec(pid="G1", title=("Gold Title",), **kw):
    return ProductSpec(product_id=pid, title=list(title), **kw)


def lookup_of(*products):
    table = {p["product_id"]: p for p in products}

    def lookup(ids):
        return {i: table[i] for i in ids if i in table}
    return lookup


# -- score_product -------------------------------------------------------------------------------

def test_exact_id_scores_one_whatever_the_product_says():
    s = spec(pid="G1", price=[{"less than": [None, 10]}], service=["official"], attributes=[{"color": ["red"]}])
    sim = DictSimilarity()
    result = score_product(product(pid="G1", title="nothing alike", price=999), s, sim)
    assert result.score == 1.0 and result.exact
    assert sim.calls == []  # short-circuits before any similarity
    other = score_product(product(pid="G2", title="nothing alike", price=999), s, sim)
    assert other.score == 0.0 and not other.exact


@pytest.mark.parametrize("sim_value, hit", [(0.5, True), (0.75, True), (0.4999, False), (0.0, False)])
def test_title_threshold_is_inclusive_at_one_half(sim_value, hit):
    assert TITLE_THRESHOLD == 0.5
    sim = DictSimilarity({("Cand", "Gold Title"): sim_value})
    r = score_product(product(pid="X", title="Cand"), spec(), sim)
    assert r.score == (1.0 if hit else 0.0)
    assert r.total == {"title": 1} and r.hit.get("title", 0) == int(hit)


def test_each_target_title_is_one_constraint():
    sim = DictSimilarity({("Cand", "T1"): 0.9, ("Cand", "T2"): 0.1})
    r = score_product(product(pid="X", title="Cand"), spec(title=("T1", "T2")), sim)
    assert r.total["title"] == 2 and r.hit["title"] == 1
    assert r.score == pytest.approx(0.5)


@pytest.mark.parametrize("constraint, price, ok", [
    ({"less than": [None, 100]}, 100.0, True),
    ({"less than": [None, 100]}, 100.01, False),
    ({"less than": [None, 100]}, 0.5, True),
    ({"greater than": [35, None]}, 35.0, True),
    ({"greater than": [35, None]}, 34.99, False),
    ({"between": [11, 206]}, 11.0, True),
    ({"between": [11, 206]}, 206.0, True),
    ({"between": [11, 206]}, 206.5, False),
    ({"between": [11, 206]}, 10.0, False),
])
def test_price_bounds_are_inclusive(constraint, price, ok):
    r = score_product(product(pid="X", price=price), spec(price=[constraint]), SIM)
    assert r.total["price"] == 1 and r.hit["price"] == int(ok)
    assert r.score == pytest.approx((1 + int(ok)) / 2)


def test_two_price_constraints_count_twice():
    s = spec(price=[{"greater than": [10, None]}, {"less than": [None, 50]}])
    r = score_product(product(pid="X", price=60), s, SIM)
    assert r.total["price"] == 2 and r.hit["price"] == 1
    assert r.score == pytest.approx(2 / 3)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_a_constraint(service):
    others = [s for s in SERVICES if s != service]
    s = spec(service=[service])
    assert score_product(product(pid="X", service=[service]), s, SIM).score == 1.0
    miss = score_product(product(pid="X", service=others), s, SIM)
    assert miss.score == pytest.approx(0.5) and miss.unmet() == ["service"]


def test_several_services_counted_one_by_one():
    s = spec(service=["official", "COD", "flashsale"])
    r = score_product(product(pid="X", service=["COD"]), s, SIM)
    assert r.total["service"] == 3 and r.hit["service"] == 1
    assert r.score == pytest.approx(2 / 4)


def test_attribute_met_by_attributes_or_by_a_sku_option():
    s = spec(attributes=[{"color": ["red"]}])
    by_attr = product(pid="X", attributes={"color": ["blue", "red"]})
    by_sku = product(pid="X", sku_options={"1": {"color": "blue"}, "2": {"color": "red"}})
    neither = product(pid="X", attributes={"color": ["blue"]}, sku_options={"1": {"color": "green"}})
    assert score_product(by_attr, s, SIM).score == 1.0
    assert score_product(by_sku, s, SIM).score == 1.0
    r = score_product(neither, s, SIM)
    assert r.score == pytest.approx(0.5) and r.unmet() == ["sku & attrs"]


def test_sku_pair_met_by_attributes():
    s = spec(sku_options=[{"size": "M"}])
    assert score_product(product(pid="X", attributes={"size": ["M"]}), s, SIM).score == 1.0


def test_sku_pairs_must_share_one_option():
    s = spec(sku_options=[{"color": "red", "size": "M"}])
    split = product(pid="X", sku_options={"1": {"color": "red", "size": "L"}, "2": {"color": "blue", "size": "M"}})
    r = score_product(split, s, SIM)
    assert r.total["sku & attrs"] == 2 and r.hit["sku & attrs"] == 1  # best single option, not the union
    assert r.score == pytest.approx(2 / 3)
    together = product(pid="X", sku_options={"1": {"color": "blue", "size": "L"}, "2": {"color": "red", "size": "M"}})
    assert score_product(together, s, SIM).score == 1.0


def test_attributes_count_with_every_option_but_skus_with_one():
    s = spec(sku_options=[{"color": "red", "size": "M"}], attributes=[{"material": ["cotton"]}])
    p = product(pid="X", attributes={"material": ["cotton"]},
                sku_options={"1": {"color": "red", "size": "S"}, "2": {"color": "black", "size": "M"}})
    r = score_product(p, s, SIM)
    assert (r.total["sku & attrs"], r.hit["sku & attrs"]) == (3, 2)


def test_empty_sku_baseline():
    s = spec(sku_options=[{"size": "M"}], attributes=[{"brand": ["acme"]}])
    # No SKU options at all: attributes alone are scored (the empty option), nothing raises.
    bare = product(pid="X", attributes={"brand": ["acme"]})
    r = score_product(bare, s, SIM)
    assert (r.total["sku & attrs"], r.hit["sku & attrs"]) == (2, 1)
    # Options that match nothing must not lower the attribute hits below the empty baseline.
    wrong = product(pid="X", attributes={"brand": ["acme"]}, sku_options={"1": {"size": "XL"}})
    assert score_product(wrong, s, SIM).hit["sku & attrs"] == 1
    nothing = product(pid="X")
    assert score_product(nothing, s, SIM).hit.get("sku & attrs", 0) == 0


def test_field_scores_and_unmet():
    s = spec(price=[{"less than": [None, 10]}], service=["COD"], attributes=[{"a": ["1", "2"]}])
    r = score_product(product(pid="X", price=5, attributes={"a": ["1"]}), s, SIM)
    assert r.field_scores() == {"title": 1.0, "price": 1.0, "service": 0.0, "sku & attrs": 0.5}
    assert r.unmet() == ["service", "sku & attrs"]
    assert r.score == pytest.approx(3 / 5)


def test_real_minilm_similarity(similarity):
    title = "Heavy Duty Pushcart Solid Rubber Wheel Steel Body 12 Inches"
    assert similarity(title, title) >= 0.99
    assert similarity(title, "Sanrio Kuromi Building Blocks Birthday Gift for Girls") < 0.5
    assert similarity("Stainless Steel Water Bottle 1L", "Lipstick Matte Long Lasting Red") < 0.5
    near = "Heavy Duty Pushcart Rubber Wheel 12 Inch Steel Body"
    assert score_product(product(pid="X", title=near), spec(title=(title,)), similarity).score == 1.0


# -- episodes --------------------------------------------------------------------------------------

def _product_task():
    return parse_task({"query": "a cheap red mug", "reward": {
        "product_id": "G1", "title": ["Red Mug"], "price": [{"less than": [None, 100]}],
        "attributes": [{"color": ["red"]}]}})


def test_product_task_scores_only_the_first_id():
    task = _product_task()
    gold = product(pid="G1", title="Red Mug", price=80, attributes={"color": ["red"]})
    wrong = product(pid="W", title="Blue Plate", price=500)
    lookup = lookup_of(gold, wrong)
    assert score_episode(task, "G1,W", lookup, SIM).success
    r = score_episode(task, ["W", "G1"], lookup, SIM)
    assert not r.success and r.gt == 0.0
    assert r.shop_ok is None and r.budget_ok is None
    # a different product that meets every rule succeeds too; one that misses the price does not
    twin = product(pid="T", title="Red Mug", price=100, attributes={"color": ["red"]})
    dear = product(pid="D", title="Red Mug", price=100.5, attributes={"color": ["red"]})
    lookup = lookup_of(twin, dear)
    ok = score_episode(task, "T", lookup, SIM)
    assert ok.success and ok.gt == 0.0 and ok.constraint_score == 1.0
    bad = score_episode(task, "D", lookup, SIM)
    assert not bad.success and bad.constraint_score == pytest.approx(2 / 3)
    assert bad.per_product[0]["unmet"] == ["price"]


def _shop_task():
    return parse_task({"query": "belt and wallet from one shop", "reward": [
        {"product_id": "G1", "title": ["Leather Belt"], "attributes": [{"material": ["leather"]}]},
        {"product_id": "G2", "title": ["Canvas Wallet"], "service": ["COD"]}]})


def test_shop_task_positional_and_one_shop():
    task = _shop_task()
    belt = product(pid="B", title="Leather Belt", shop_id="S1", attributes={"material": ["leather"]})
    wallet = product(pid="W", title="Canvas Wallet", shop_id="S1", service=["COD"])
    wallet_elsewhere = product(pid="W2", title="Canvas Wallet", shop_id="S2", service=["COD"])
    lookup = lookup_of(belt, wallet, wallet_elsewhere)

    ok = score_episode(task, "B,W", lookup, SIM)
    assert ok.success and ok.shop_ok and ok.constraint_score == 1.0

    swapped = score_episode(task, "W,B", lookup, SIM)
    assert not swapped.success and swapped.constraint_score < 1.0

    two_shops = score_episode(task, "B,W2", lookup, SIM)
    assert two_shops.constraint_score == 1.0  # every product is right ...
    assert two_shops.shop_ok is False and not two_shops.success  # ... but not from one shop

    short = score_episode(task, "B", lookup, SIM)
    assert not short.success and short.constraint_score == pytest.approx(0.5) and short.shop_ok is False
    assert short.per_product[1] == {"product_id": None, "score": 0.0, "unmet": ["missing"]}


def _voucher_task(voucher, n=2):
    reward = [{"product_id": f"G{i}", "title": [f"Item {i}"]} for i in range(1, n + 1)]
    return parse_task({"query": f"basket {voucher}", "reward": reward, "voucher": voucher})


def _basket(prices, shops=None):
    shops = shops or ["S1"] * len(prices)
    return [product(pid=f"X{i}", title=f"Item {i}", price=p, shop_id=s)
            for i, (p, s) in enumerate(zip(prices, shops, strict=True), 1)]


def _voucher(**kw):
    base = {"voucher_type": "platform", "threshold": 0, "discount_type": "fixed", "face_value": 0,
            "discount": None, "cap": None, "price_after_voucher": None, "budget": 0}
    base.update(kw)
    return base


def _run_voucher(voucher, prices, shops=None):
    task = _voucher_task(voucher, len(prices))
    basket = _basket(prices, shops)
    return score_episode(task, [p["product_id"] for p in basket], lookup_of(*basket), SIM)


def test_voucher_total_within_budget_needs_no_voucher():
    v = _voucher(voucher_type="shop", threshold=10_000, budget=300)
    r = _run_voucher(v, [100, 200], shops=["S1", "S2"])
    assert r.budget_ok and r.success
    assert not _run_voucher(v, [100, 200.01], shops=["S1", "S2"]).success


def test_fixed_voucher():
    v = _voucher(threshold=400, face_value=100, budget=420)
    assert _run_voucher(v, [250, 250]).success           # 500 - 100 = 400 <= 420
    assert not _run_voucher(v, [260, 270]).success       # 530 - 100 = 430 > 420
    assert _run_voucher(v, [200, 200]).success           # within budget anyway
    high = _voucher(threshold=600, face_value=100, budget=420)
    r = _run_voucher(high, [250, 250])                   # 500 < 600: the voucher does not apply
    assert r.budget_ok is False and not r.success and r.constraint_score == 1.0


def test_threshold_is_inclusive():
    v = _voucher(threshold=500, face_value=100, budget=420)
    assert _run_voucher(v, [250, 250]).success           # exactly the threshold
    assert not _run_voucher(_voucher(threshold=500.01, face_value=100, budget=420), [250, 250]).success


def test_percentage_voucher_with_cap():
    # 1000 at 20% off is 800, but at most 150 off: 850
    capped = _voucher(threshold=500, discount_type="percentage", face_value=None, discount=0.2, cap=150, budget=860)
    assert _run_voucher(capped, [600, 400]).success
    assert not _run_voucher({**capped, "budget": 840}, [600, 400]).success
    uncapped = {**capped, "cap": 1000, "budget": 800}
    assert _run_voucher(uncapped, [600, 400]).success
    assert not _run_voucher({**uncapped, "budget": 799.99}, [600, 400]).success


def test_shop_voucher_needs_one_shop():
    v = _voucher(voucher_type="shop", threshold=100, face_value=100, budget=450)
    one = _run_voucher(v, [250, 250], shops=["S1", "S1"])
    assert one.budget_ok and one.success
    two = _run_voucher(v, [250, 250], shops=["S1", "S2"])
    assert two.budget_ok is False and not two.success
    platform = _run_voucher({**v, "voucher_type": "platform"}, [250, 250], shops=["S1", "S2"])
    assert platform.budget_ok and platform.success


def test_budget_satisfied_directly():
    v = TaskVoucher(voucher_type="platform", threshold=100, discount_type="percentage", discount=0.5, cap=None,
                    budget=60)
    assert budget_satisfied([{"price": 60, "shop_id": "a"}], v)
    assert budget_satisfied([{"price": 120, "shop_id": "a"}], v)        # no cap: 60
    assert not budget_satisfied([{"price": 99, "shop_id": "a"}], v)     # below threshold, over budget


def test_voucher_rule_failure_fails_even_within_budget():
    v = _voucher(threshold=0, face_value=0, budget=1000)
    task = parse_task({"query": "v", "reward": [{"product_id": "G1", "title": ["Item 1"],
                                                 "service": ["COD"]}], "voucher": v})
    p = product(pid="X", title="Item 1", price=10)
    r = score_episode(task, "X", lookup_of(p), SIM)
    assert r.budget_ok and not r.success and r.constraint_score == pytest.approx(0.5)


def _web_task():
    return parse_task({"query": "strap themed on the city", "Knowledge_Attribute": "Milan", "reward": {
        "product_id": "G1", "shop_id": "S", "title": "Metal Milan Magnetic Strap", "description": "d",
        "price": 10}})


@pytest.mark.parametrize("title, description, sim_value, success", [
    ("Milan Loop Strap", "", 0.8, True),                   # knowledge in title, sim at threshold
    ("Magnetic Loop Strap", "made in milan style", 0.9, True),  # knowledge in description (any case)
    ("Magnetic Loop Strap", "nothing", 0.95, False),       # no knowledge
    ("Milan Loop Strap", "", 0.79, False),                 # title too far
])
def test_web_task(title, description, sim_value, success):
    task = _web_task()
    assert WEB_TITLE_THRESHOLD == 0.8
    sim = DictSimilarity({(title, "Metal Milan Magnetic Strap"): sim_value})
    p = product(pid="X", title=title, description=description)
    r = score_episode(task, "X", lookup_of(p), sim)
    assert r.success is success
    assert r.knowledge_ok is ("milan" in (title + description).lower())
    assert r.title_ok is (sim_value >= 0.8)


def test_web_exact_id_succeeds():
    task = _web_task()
    p = product(pid="G1", title="renamed", description="")
    r = score_episode(task, "G1", lookup_of(p), DictSimilarity())
    assert r.success and r.gt == 1.0


@pytest.mark.parametrize("make_task", [_product_task, _shop_task, _web_task,
                                       lambda: _voucher_task(_voucher(budget=100))])
@pytest.mark.parametrize("recommended", ["nope", "nope,also-nope", "", None, [], " , "])
def test_unknown_or_missing_ids_score_zero(make_task, recommended):
    r = score_episode(make_task(), recommended, lookup_of(product(pid="G9")), SIM)
    assert r.success is False
    assert r.constraint_score == 0.0 and r.gt == 0.0


def test_parse_recommendation():
    assert parse_recommendation(" a, b ,,c ") == [" a", " b ", "", "c "]  # upstream trims nothing
    assert parse_recommendation(["a", 12, " "]) == ["a", "12", " "]
    assert parse_recommendation("") == []
    assert parse_recommendation(None) == []


# -- pass^k ------------------------------------------------------------------------------------------

def _brute_pass_hat_k(trials, k):
    combos = list(itertools.combinations(range(len(trials)), k))
    return sum(all(trials[i] for i in c) for c in combos) / len(combos)


def test_pass_hat_k_closed_form():
    runs = {"t1": [True, True, False, True], "t2": [True, False, False, False], "t3": [True] * 4}
    # t1: C(3,2)/C(4,2) = 1/2, t2: 0, t3: 1  ->  1/2
    assert pass_hat_k(runs, 2) == pytest.approx(0.5)
    assert pass_hat_k(runs, 1) == pytest.approx((3 / 4 + 1 / 4 + 1) / 3)
    assert pass_hat_k(runs, 4) == pytest.approx(1 / 3)
    rng = random.Random(7)
    many = {f"t{i}": [rng.random() < 0.6 for _ in range(6)] for i in range(20)}
    for k in range(1, 7):
        expected = sum(_brute_pass_hat_k(t, k) for t in many.values()) / len(many)
        assert pass_hat_k(many, k) == pytest.approx(expected)


def test_pass_hat_k_skips_tasks_with_too_few_trials():
    assert pass_hat_k({"a": [True, True], "b": [False]}, 2) == 1.0
    assert math.isnan(pass_hat_k({"b": [False]}, 2))


def test_constraint_checks_are_what_the_score_counts():
    task = _product_task()
    near = product(pid="N", title="Red Mug", price=120, attributes={"color": ["red"]},
                   sku_options={"1": {"color": "blue"}})
    score = score_episode(task, "N", lookup_of(near), SIM, with_checks=True)
    checks = score.per_product[0]["checks"]
    assert [(c["field"], c["met"]) for c in checks] == [("title", True), ("price", False), ("sku & attrs", True)]
    assert checks[1]["requirement"] == "price at most 100"
    assert score.constraint_score == pytest.approx(sum(c["met"] for c in checks) / len(checks))
    assert score.per_product[0]["exact"] is False
    exact = score_episode(task, "G1", lookup_of(product(pid="G1", title="x", price=1)), SIM, with_checks=True)
    assert exact.per_product[0]["exact"] is True and exact.per_product[0]["checks"] == []
    assert "checks" not in score_episode(task, "N", lookup_of(near), SIM).per_product[0]
