"""`ShoppingEnv` on a real small sandbox: hostile tool calls, limits, isolation, filters, the cart."""

from __future__ import annotations

import json
import math

import pytest

from sandbox.data_model import SEARCH_HIT_FIELDS, SERVICES
from sandbox.engines.base import analyze, searchable_text
from sandbox.environment import MAX_ARGUMENT_CHARS, ShoppingEnv
from sandbox.tools import MAX_VIEW_IDS, TOOLS, openai_tools

VALID_SEARCH = {"q": "wheel"}


def _ok_search(env: ShoppingEnv, args=None):
    r = env.step("find_product", args or VALID_SEARCH)
    assert r.ok, r.observation
    assert not r.done
    assert r.data, "a valid search for a common word must find products"
    return r


def _ids(world, n):
    """n real product ids of the sandbox (gold products of the dev tasks)."""
    ids = [s.product_id for t in world.tasks.values() for s in t.reward]
    return list(dict.fromkeys(ids))[:n]


def _hostile_cases(world):
    pid = _ids(world, 1)[0]
    many = ",".join(str(1_000_000_000 + i) for i in range(500))
    return [
        ("unknown tool", "delete_everything", {}),
        ("tool name with shell", "find_product; rm -rf /", {"q": "wheel"}),
        ("arguments not JSON", "find_product", '{"q": "wheel"'),
        ("arguments a JSON list", "find_product", '["wheel", 2]'),
        ("arguments a JSON string", "find_product", '"wheel"'),
        ("arguments a JSON number", "find_product", "42"),
        ("arguments a python list", "find_product", ["wheel"]),
        ("arguments too long", "find_product", json.dumps({"q": "w" * (MAX_ARGUMENT_CHARS + 10)})),
        ("missing q", "find_product", {}),
        ("q not a string", "find_product", {"q": ["wheel"]}),
        ("page not a number", "find_product", {"q": "wheel", "page": "abc"}),
        ("page 99", "find_product", {"q": "wheel", "page": 99}),
        ("page 0", "find_product", {"q": "wheel", "page": 0}),
        ("page fractional", "find_product", {"q": "wheel", "page": 1.5}),
        ("price not a range", "find_product", {"q": "wheel", "price": "abc"}),
        ("price reversed", "find_product", {"q": "wheel", "price": "500-100"}),
        ("price negative-looking", "find_product", {"q": "wheel", "price": "--5"}),
        ("unknown sort", "find_product", {"q": "wheel", "sort": "random"}),
        ("unknown service", "find_product", {"q": "wheel", "service": "teleport"}),
        ("shop id with spaces", "find_product", {"q": "wheel", "shop_id": "1 OR 1=1"}),
        ("10k-char q", "find_product", {"q": "wheel " * 2000}),
        ("q only punctuation", "find_product", {"q": "!!! ??? ... ---"}),
        ("q only whitespace", "find_product", {"q": "   \t "}),
        ("q control characters", "find_product", {"q": "\x00\x01\x02"}),
        ("lucene match-all", "find_product", {"q": "*:*"}),
        ("extra unknown parameter", "find_product", {"q": "wheel", "index": "products"}),
        ("view 500 ids", "view_product_information", {"product_ids": many}),
        ("view no ids", "view_product_information", {"product_ids": ""}),
        ("view id with quotes", "view_product_information", {"product_ids": "1' OR '1'='1"}),
        ("recommend unknown id", "recommend_product", {"product_ids": "1234567"}),
        ("recommend nothing", "recommend_product", {"product_ids": " , "}),
        ("add quantity 0", "add_to_cart", {"product_id": pid, "quantity": 0}),
        ("add quantity 1000", "add_to_cart", {"product_id": pid, "quantity": 1000}),
        ("add unknown product", "add_to_cart", {"product_id": "999"}),
        ("add two products at once", "add_to_cart", {"product_id": f"{pid},{pid}"}),
        ("remove what is not in the cart", "remove_from_cart", {"product_id": pid}),
        ("terminate with an odd status", "terminate", {"status": "maybe"}),
        ("calculate code", "calculate", {"expression": "__import__('os').system('x')"}),
        ("view_cart with a parameter", "view_cart", {"all": True}),
    ]


def test_hostile_battery_errors_and_the_episode_continues(world):
    cases = _hostile_cases(world)
    for name, tool, arguments in cases:
        env = ShoppingEnv(world)
        r = env.step(tool, arguments)
        assert r.ok is False, name
        assert r.observation.startswith("Error:"), (name, r.observation)
        assert "Traceback" not in r.observation, name
        assert len(r.observation) < 2_000, name
        assert r.done is False and not env.state.done, name
        assert env.state.recommended == [], name
        after = _ok_search(env)
        assert after.ok, name
        assert [h.tool for h in env.state.history] == [str(tool)[:80], "find_product"], name


def test_hostile_calls_in_one_long_episode(world):
    env = ShoppingEnv(world, max_steps=200)
    for name, tool, arguments in _hostile_cases(world):
        r = env.step(tool, arguments)
        assert not r.ok and r.observation.startswith("Error:"), name
    assert _ok_search(env).ok
    assert len(env.state.cart) == 0 and env.state.recommended == []


def test_error_messages_name_the_problem(world):
    env = ShoppingEnv(world, max_steps=50)
    assert "unknown tool" in env.step("nope", {}).observation
    assert "not valid JSON" in env.step("find_product", "{oops").observation
    assert "JSON object" in env.step("find_product", "[1]").observation
    assert "page" in env.step("find_product", {"q": "wheel", "page": 99}).observation
    assert "unknown parameter" in env.step("find_product", {"q": "wheel", "boost": 3}).observation
    assert "price" in env.step("find_product", {"q": "wheel", "price": "500-100"}).observation
    assert str(MAX_VIEW_IDS) in env.step("view_product_information",
                                         {"product_ids": ",".join(_ids(world, 1) * 30)}).observation
    assert "quantity" in env.step("add_to_cart", {"product_id": _ids(world, 1)[0], "quantity": 0}).observation


@pytest.mark.parametrize("q", ["title:x OR y", '{"query":{"match_all":{}}}', "brand:* AND price:[0 TO 1]",
                               "wheel^100 OR (*)", 'q=wheel"; DROP TABLE products; --'])
def test_query_syntax_is_plain_words(world, q):
    """Lucene / Elasticsearch syntax in q is never interpreted: it is a search for its words."""
    env = ShoppingEnv(world)
    r = env.step("find_product", {"q": q})
    words = set(analyze(q))
    assert words
    if r.ok:
        hits = r.data or []
        full = world.products([h["product_id"] for h in hits])
        for h in hits:
            assert words & set(searchable_text(full[h["product_id"]]).split()), (q, h["title"])
    else:
        assert r.observation.startswith("Error:")
    # nothing matched "everything": the DSL match_all is not a match-all query
    assert world.search(_request(words)).total < world.backend.count()
    assert _ok_search(env).ok


def _request(words, **kw):
    from sandbox.engines.base import SearchRequest

    return SearchRequest(terms=tuple(sorted(words)), **kw)


# -- limits and isolation -------------------------------------------------------------------------------

def test_step_limit_ends_the_episode(world):
    env = ShoppingEnv(world, max_steps=3)
    results = [env.step("find_product", VALID_SEARCH) for _ in range(3)]
    assert all(r.ok for r in results)
    assert [r.done for r in results[:2]] == [False, False]
    assert env.state.done and env.state.steps == 3  # after max_steps the episode is done
    over = env.step("find_product", VALID_SEARCH)
    assert not over.ok and over.done and over.observation.startswith("Error:")
    assert "ended" in over.observation
    again = env.step("view_cart", {})
    assert not again.ok and again.done
    assert env.state.steps == 3


def test_errors_count_as_steps(world):
    env = ShoppingEnv(world, max_steps=3)
    env.step("nope", {})
    env.step("find_product", "{bad")
    assert env.state.steps == 2
    env.step("find_product", VALID_SEARCH)
    assert env.state.done
    assert not env.step("find_product", VALID_SEARCH).ok


def test_terminate_ends_the_episode(world):
    env = ShoppingEnv(world)
    r = env.step("terminate", {"status": "failure"})
    assert r.ok and r.done and env.state.terminate_status == "failure"
    after = env.step("find_product", VALID_SEARCH)
    assert not after.ok and after.done and after.observation.startswith("Error:")
    env.reset()
    assert not env.state.done and _ok_search(env).ok


def test_two_envs_share_nothing(world):
    a, b = ShoppingEnv(world), ShoppingEnv(world)
    p1, p2 = _ids(world, 2)
    assert a.step("add_to_cart", {"product_id": p1, "quantity": 2}).ok
    assert a.step("recommend_product", {"product_ids": p1}).ok
    assert b.step("recommend_product", {"product_ids": p2}).ok
    assert a.state.recommended == [p1] and b.state.recommended == [p2]
    assert b.step("view_cart", {}).data["items"] == []
    assert [i["product_id"] for i in a.step("view_cart", {}).data["items"]] == [p1]
    assert len(a.state.history) == 3 and len(b.state.history) == 2
    b.step("terminate", {})
    assert b.state.done and not a.state.done


def test_recommend_keeps_the_last_valid_call(world):
    env = ShoppingEnv(world)
    p1, p2, p3 = _ids(world, 3)
    assert env.step("recommend_product", {"product_ids": f"{p1}, {p2}"}).ok
    assert env.state.recommended == [p1, p2]
    assert not env.step("recommend_product", {"product_ids": f"{p3},424242"}).ok
    assert env.state.recommended == [p1, p2]  # a failed call changes nothing
    assert env.step("recommend_product", {"product_ids": [p3]}).ok
    assert env.state.recommended == [p3] and env.state.recommend_calls == 2


# -- search filters and sorts -----------------------------------------------------------------------------

def _all_pages(env, args):
    out = []
    for page in range(1, 6):
        r = env.step("find_product", {**args, "page": page})
        assert r.ok, r.observation
        if not r.data:
            break
        out.extend(r.data)
    return out


def test_hits_have_the_search_fields_only(world):
    hits = _ok_search(ShoppingEnv(world)).data
    assert 0 < len(hits) <= 10
    for h in hits:
        assert tuple(h) == SEARCH_HIT_FIELDS


@pytest.mark.parametrize("price, low, high", [("50-200", 50, 200), ("300-", 300, math.inf), ("-80", 0, 80),
                                               ("100.5-250.25", 100.5, 250.25)])
def test_price_filter_is_honoured(world, price, low, high):
    env = ShoppingEnv(world, max_steps=50)
    hits = _all_pages(env, {"q": "set black white", "price": price})
    assert hits
    assert all(low <= h["price"] <= high for h in hits), [h["price"] for h in hits]


@pytest.mark.parametrize("service", [*SERVICES, "official,COD", "freeShipping,flashsale"])
def test_service_filter_is_honoured(world, service):
    env = ShoppingEnv(world, max_steps=50)
    hits = _all_pages(env, {"q": "set black white", "service": service})
    assert hits
    wanted = set(service.split(","))
    assert all(wanted <= set(h["service"]) for h in hits)


def test_shop_filter_is_honoured(world):
    env = ShoppingEnv(world, max_steps=80)
    hits = _all_pages(env, {"q": "set black white kids"})
    shop = max({h["shop_id"] for h in hits}, key=lambda s: sum(h["shop_id"] == s for h in hits))
    in_shop = _all_pages(env, {"q": "set black white kids", "shop_id": shop})
    assert in_shop and all(h["shop_id"] == shop for h in in_shop)
    combined = _all_pages(env, {"q": "set black white kids", "shop_id": shop, "price": "0-100000",
                                "sort": "priceasc"})
    assert all(h["shop_id"] == shop for h in combined)
    assert env.step("find_product", {"q": "wheel", "shop_id": "0000000"}).data == []


@pytest.mark.parametrize("sort, key, reverse", [("priceasc", "price", False), ("pricedesc", "price", True),
                                                 ("order", "sold_count", True)])
def test_sorts_are_monotone_across_pages(world, sort, key, reverse):
    env = ShoppingEnv(world, max_steps=50)
    hits = _all_pages(env, {"q": "black", "sort": sort})
    assert len(hits) > 10
    values = [h[key] for h in hits]
    assert values == sorted(values, reverse=reverse)


def test_sorted_search_requires_every_word(world):
    env = ShoppingEnv(world, max_steps=50)
    hits = _all_pages(env, {"q": "rubber wheel", "sort": "priceasc"})
    assert hits
    full = world.products([h["product_id"] for h in hits])
    for h in hits:
        assert {"rubber", "wheel"} <= set(searchable_text(full[h["product_id"]]).split())


def test_page_two_differs_from_page_one(world):
    env = ShoppingEnv(world)
    p1 = env.step("find_product", {"q": "black"}).data
    p2 = env.step("find_product", {"q": "black", "page": 2}).data
    assert len(p1) == 10 and p2
    assert not {h["product_id"] for h in p1} & {h["product_id"] for h in p2}


def test_relevance_finds_a_gold_product_by_its_title(world):
    env = ShoppingEnv(world)
    task = world.tasks_by_intent("product")[0]
    gold = task.reward[0]
    hits = env.step("find_product", {"q": gold.title[0]}).data
    assert gold.product_id in [h["product_id"] for h in hits]


def test_view_product_information(world):
    env = ShoppingEnv(world)
    p1, p2 = _ids(world, 2)
    r = env.step("view_product_information", {"product_ids": f"{p1},999,{p2}"})
    assert r.ok
    assert [x["product_id"] for x in r.data] == [p1, "999", p2]
    assert r.data[1]["error"] == "no such product"
    assert set(r.data[0]) == {"product_id", "short_description", "description", "sku_options", "attributes"}
    assert r.data[0]["attributes"] == world.products([p1])[p1]["attributes"]


# -- cart ----------------------------------------------------------------------------------------------------

def _expected_after(v, total, shops):
    """The task voucher rule restated from data/README (platform always; shop needs one shop)."""
    applies = total >= v.threshold and (v.voucher_type == "platform" or len(shops) == 1)
    if not applies:
        return total, False
    if v.discount_type == "fixed":
        after = total - (v.face_value or 0)
    else:
        after = max(total * (1 - (v.discount or 0)), total - (v.cap if v.cap is not None else math.inf))
    after = max(after, 0.0)
    return (after, True) if after < total else (total, False)


def test_view_cart_applies_the_task_voucher(world):
    counts = {"applied": 0, "not_applied": 0, "needed_for_budget": 0}
    for task in world.tasks_by_intent("voucher"):
        env = ShoppingEnv(world, task=task)
        assert env.wallet, "a voucher task's episode carries its voucher"
        for spec in task.reward:
            r = env.step("add_to_cart", {"product_id": spec.product_id})
            assert r.ok, r.observation
        cart = env.step("view_cart", {}).data
        golds = world.products([s.product_id for s in task.reward])
        total = round(sum(golds[s.product_id]["price"] for s in task.reward), 2)
        shops = {golds[s.product_id]["shop_id"] for s in task.reward}
        after, applied = _expected_after(task.voucher, total, shops)
        assert cart["total"] == pytest.approx(total)
        assert (cart["voucher"] is not None) is applied, task.task_id
        assert cart["total_after_voucher"] == pytest.approx(after, abs=0.011)
        assert cart["discount"] == pytest.approx(total - after, abs=0.011)
        assert cart["budget"] == task.voucher.budget
        assert cart["within_budget"] is (cart["total_after_voucher"] <= task.voucher.budget)
        counts["applied" if applied else "not_applied"] += 1
        if applied and total > task.voucher.budget and cart["within_budget"]:
            counts["needed_for_budget"] += 1
    assert counts["applied"] > 0 and counts["needed_for_budget"] > 0


def test_voucher_not_applied_below_threshold(world):
    task = next(t for t in world.tasks_by_intent("voucher") if t.voucher.threshold > 5)
    env = ShoppingEnv(world, task=task)
    cheap = world.search(_request({"black"}, sort=_sort("priceasc"))).hits[0].product
    assert cheap["price"] < task.voucher.threshold
    cart = env.step("add_to_cart", {"product_id": cheap["product_id"]}).data
    assert cart["voucher"] is None and cart["discount"] == 0
    assert cart["total_after_voucher"] == cart["total"] == cheap["price"]
    assert cart["within_budget"] is (cheap["price"] <= task.voucher.budget)


def _sort(name):
    from sandbox.engines.base import SortOrder

    return SortOrder(name)


def test_cart_without_a_task_has_no_budget(world):
    env = ShoppingEnv(world)
    cart = env.step("view_cart", {}).data
    assert cart["items"] == [] and cart["total"] == 0 and "budget" not in cart


def test_add_and_remove_from_cart(world):
    env = ShoppingEnv(world)
    p1, p2 = _ids(world, 2)
    prices = {p: world.products([p])[p]["price"] for p in (p1, p2)}
    env.step("add_to_cart", {"product_id": p1, "quantity": 2})
    cart = env.step("add_to_cart", {"product_id": p2}).data
    assert cart["total"] == pytest.approx(2 * prices[p1] + prices[p2], abs=0.011)
    cart = env.step("remove_from_cart", {"product_id": p1, "quantity": 1}).data
    assert {i["product_id"]: i["quantity"] for i in cart["items"]} == {p1: 1, p2: 1}
    cart = env.step("remove_from_cart", {"product_id": p1}).data
    assert [i["product_id"] for i in cart["items"]] == [p2]
    assert cart["total"] == pytest.approx(prices[p2])
    assert not env.step("remove_from_cart", {"product_id": p1}).ok
    env.step("add_to_cart", {"product_id": p2, "quantity": 98})
    over = env.step("add_to_cart", {"product_id": p2})
    assert not over.ok and over.observation.startswith("Error:")
    assert env.cart_summary()["items"][0]["quantity"] == 99


def test_calculate_tool(world):
    env = ShoppingEnv(world)
    r = env.step("calculate", {"expression": "max(1000*(1-0.2), 1000-150)"})
    assert r.ok and r.observation == "850" and r.data == 850


def test_episode_score_uses_the_last_recommendation(world, similarity):
    task = world.tasks_by_intent("product")[0]
    env = ShoppingEnv(world, task=task)
    other = next(i for i in _ids(world, 50) if i != task.reward[0].product_id)
    env.step("recommend_product", {"product_ids": task.reward[0].product_id})
    assert env.score(similarity).success
    env.step("recommend_product", {"product_ids": other})
    assert env.score(similarity).recommended == [other]


# -- tool schemas --------------------------------------------------------------------------------------------

def test_openai_tool_json(world):
    tools = openai_tools()
    assert [t["function"]["name"] for t in tools] == list(TOOLS)
    for t in tools:
        json.dumps(t)
        assert t["type"] == "function"
        fn = t["function"]
        assert set(fn) >= {"name", "description", "parameters"}
        assert fn["name"] and fn["description"].strip()
        params = fn["parameters"]
        assert params["type"] == "object" and isinstance(params["properties"], dict)
        model_fields = TOOLS[fn["name"]].args_model.model_fields
        assert set(params["properties"]) == set(model_fields)
        required = {n for n, f in model_fields.items() if f.is_required()}
        assert set(params.get("required", [])) == required
    find = next(t for t in tools if t["function"]["name"] == "find_product")["function"]["parameters"]
    assert find["required"] == ["q"]
    assert set(find["properties"]["sort"]["enum"]) == {"default", "priceasc", "pricedesc", "order"}
    assert ShoppingEnv(world).openai_tools() == tools
    restricted = ShoppingEnv(world, tools=["find_product", "terminate"])
    assert [t["function"]["name"] for t in restricted.openai_tools()] == ["find_product", "terminate"]
    r = restricted.step("add_to_cart", {"product_id": _ids(world, 1)[0]})
    assert not r.ok and "unknown tool" in r.observation


def test_tool_kinds():
    for spec in TOOLS.values():
        assert spec.kind in ("read", "write")
    assert {n for n, s in TOOLS.items() if s.kind == "write"} == {"recommend_product", "terminate", "add_to_cart",
                                                                   "remove_from_cart"}


def test_unknown_tool_names_are_refused_at_construction(world):
    with pytest.raises(ValueError):
        ShoppingEnv(world, tools=["find_product", "rm"])


def test_a_shoppers_own_request_budget_and_live_steps(world):
    env = ShoppingEnv(world, instruction="a red mug", budget=50.0)
    assert env.instruction == "a red mug" and env.budget == 50.0
    seen = []
    env.add_step_listener(seen.append)
    env.add_step_listener(lambda step: 1 / 0)  # a broken observer costs nothing
    result = env.step("find_product", VALID_SEARCH)
    assert seen == [result] and result.ok
    product_id = result.data[0]["product_id"]
    env.step("add_to_cart", {"product_id": product_id, "quantity": 1})
    summary = env.cart_summary()
    assert summary["budget"] == 50.0 and summary["within_budget"] == (summary["total_after_voucher"] <= 50.0)
    env.budget = None
    assert "budget" not in env.cart_summary()
    task = next(t for t in world.tasks.values() if t.voucher is not None)
    assert ShoppingEnv(world, task).budget == task.voucher.budget
    assert ShoppingEnv(world, task, instruction="other").instruction == "other"
