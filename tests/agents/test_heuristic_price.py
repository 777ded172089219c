"""The heuristic with the request's price: it applies the range it reads, and falls back without it."""

from __future__ import annotations

import pytest

from agents.runner import RunConfig, run_benchmark
from agents.scripted.heuristic import HeuristicAgent, price_filter_from_instruction
from sandbox import ShoppingEnv
from sandbox.tools import parse_price_filter


@pytest.mark.parametrize(("text", "price"), [
    ("A stainless steel water bottle under 500", "-500"),
    ("a phone case below 1,250.50 PHP", "-1250.5"),
    ("headphones over 300 PHP", "300-"),
    ("priced above 80 pesos", "80-"),
    ("between 2,000 and 1,000 pesos", "1000-2000"),
    ("in the 100-250 PHP range", "100-250"),
    ("priced from 10 to 37 PHP", "10-37"),
    ("toys for kids from 3 to 6 years", None),   # an age, not a price
    ("a 12 inch heavy-duty rubber wheel", None),
])
def test_the_price_a_request_states_is_read_as_a_find_product_filter(text, price):
    assert price_filter_from_instruction(text) == price
    if price:
        parse_price_filter(price)  # a filter the tool accepts


def test_it_recommends_within_the_stated_price_where_the_plain_heuristic_does_not(world):
    """The demo's "water bottle under 500" was answered with a product of 2,800: on the product tasks that
    state a price range, the price-aware heuristic's answer is within it on (nearly) every task, and on
    more of them than the plain heuristic's."""
    tasks = [t for t in world.tasks.values() if t.intent.value == "product" and price_filter_from_instruction(t.query)]
    assert len(tasks) >= 20
    within = {}
    for agent in (HeuristicAgent(), HeuristicAgent(apply_price=True)):
        inside = 0
        for task in tasks:
            env = ShoppingEnv(world, task)
            agent.run_episode(env)
            low, high = parse_price_filter(price_filter_from_instruction(task.query))
            prices = [world.products([pid])[pid]["price"] for pid in env.state.recommended]
            inside += bool(prices) and all((low is None or p >= low) and (high is None or p <= high) for p in prices)
        within[agent.name] = inside
    assert within["heuristic_price"] > within["heuristic"]
    assert within["heuristic_price"] >= 0.9 * len(tasks)


def test_with_no_product_in_range_it_searches_again_without_the_price(world):
    env = ShoppingEnv(world, instruction="a stainless steel water bottle under 0.01")
    info = HeuristicAgent(apply_price=True).run_episode(env)
    calls = [s.tool for s in env.state.history]
    assert info["price"] == "-0.01" and calls[:2] == ["find_product", "find_product"]
    assert env.state.recommended  # the unfiltered search still found something to recommend


def test_heuristic_price_is_a_registered_benchmark_agent(world, similarity, tmp_path):
    from agents.registry import make_agent

    tasks = [t for t in world.tasks.values() if t.intent.value == "product"][:4]
    summary = run_benchmark(world, tasks, lambda: make_agent("heuristic_price"), tmp_path,
                            RunConfig(agent="heuristic_price"), similarity=similarity, progress=False)
    assert summary["overall"]["n"] == 4 and summary["run"]["agent"] == "heuristic_price"
