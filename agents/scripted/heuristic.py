"""The rule baseline (WebShop's in spirit): search the instruction text, recommend the top hit.

It never sees the reward. Its success rate is the floor every learned agent must beat. When the
episode offers the recommender tool `rank_products` (`shoplab bench run --recsys-service DIR`), it
orders the first page of hits with it and recommends the ranker's first choice instead: how much a
ranker (DIN, the knowledge-aware CoCo) helps or hurts an agent, on the same tasks.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox import ShoppingEnv
from sandbox.tools import MAX_QUERY_CHARS

# Price phrases of shopping requests ("under 500", "between 1,000 and 2,000 pesos", "over 300 PHP").
_NUMBER = r"(\d[\d,]*(?:\.\d+)?)"
_PRICE_PATTERNS = [
    # "between"/"from" only with a price word before or a currency after: "from 3 to 6 years" is an age.
    (re.compile(rf"\b(?:priced?|costs?|costing)\s+(?:between|from)\s+(?:php|₱)?\s*{_NUMBER}\s*(?:php|pesos?)?\s+"
                rf"(?:and|to)\s+(?:php|₱)?\s*{_NUMBER}", re.I), "between"),
    (re.compile(rf"\b(?:between|from)\s+(?:php|₱)?\s*{_NUMBER}\s*(?:php|pesos?)?\s+(?:and|to)\s+(?:php|₱)?\s*"
                rf"{_NUMBER}\s*(?:php|pesos?)\b", re.I), "between"),
    (re.compile(rf"\b{_NUMBER}\s*-\s*{_NUMBER}\s*(?:php|pesos?)\b", re.I), "between"),
    (re.compile(rf"\b(?:under|below|less than|cheaper than|at most|up to|no more than|within)\s+(?:php|₱)?\s*"
                rf"{_NUMBER}", re.I), "at_most"),
    (re.compile(rf"\b(?:over|above|more than|at least|no less than)\s+(?:php|₱)?\s*{_NUMBER}", re.I), "at_least"),
]


def price_filter_from_instruction(instruction: str) -> str | None:
    """The `price` argument of find_product a request states ("-500", "300-", "1000-2000"), or None."""
    for pattern, kind in _PRICE_PATTERNS:
        m = pattern.search(instruction)
        if not m:
            continue
        values = [float(g.replace(",", "")) for g in m.groups()]
        text = [f"{v:g}" for v in values]
        if kind == "between":
            low, high = sorted(values)
            return f"{low:g}-{high:g}"
        return f"-{text[0]}" if kind == "at_most" else f"{text[0]}-"
    return None


class HeuristicAgent:
    """`apply_price`: also pass the price range the request states as find_product's filter (searching
    again without it when nothing matches). Off for the benchmark's `heuristic` floor, whose committed
    numbers it would change; `heuristic_price` and the demo's chat use it."""

    name = "heuristic"

    def __init__(self, apply_price: bool = False):
        self.apply_price = apply_price
        if apply_price:
            self.name = "heuristic_price"

    def query_from_instruction(self, instruction: str) -> str:
        # Voucher tasks append the voucher rules after a blank line; they are not product words.
        text = instruction.split("\n\n")[0]
        text = re.sub(r"\s+", " ", text).strip()
        return text[:MAX_QUERY_CHARS]

    def run_episode(self, env: ShoppingEnv) -> dict[str, Any] | None:
        query = self.query_from_instruction(env.instruction)
        info: dict[str, Any] = {"query": json.dumps(query)[:200]}
        hits: list[dict[str, Any]] = []
        price = price_filter_from_instruction(query) if self.apply_price else None
        if price:
            result = env.step("find_product", {"q": query, "page": 1, "price": price})
            hits = result.data if result.ok and isinstance(result.data, list) else []
            info["price"] = price
        if not hits:
            result = env.step("find_product", {"q": query, "page": 1})
            hits = result.data if result.ok and isinstance(result.data, list) else []
        if hits:
            choice = hits[0]["product_id"]
            if "rank_products" in env.tool_names and len(hits) > 1:
                ranked = env.step("rank_products", {"product_ids": [h["product_id"] for h in hits]})
                if ranked.ok and isinstance(ranked.data, dict) and ranked.data.get("ranked"):
                    choice = ranked.data["ranked"][0]["product_id"]
                    info["reranked"] = choice != hits[0]["product_id"]
            env.step("recommend_product", {"product_ids": choice})
        env.step("terminate", {"status": "success" if hits else "failure"})
        return info
