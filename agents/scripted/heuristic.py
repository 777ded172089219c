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


class HeuristicAgent:
    name = "heuristic"

    def query_from_instruction(self, instruction: str) -> str:
        # Voucher tasks append the voucher rules after a blank line; they are not product words.
        text = instruction.split("\n\n")[0]
        text = re.sub(r"\s+", " ", text).strip()
        return text[:MAX_QUERY_CHARS]

    def run_episode(self, env: ShoppingEnv) -> dict[str, Any] | None:
        query = self.query_from_instruction(env.instruction)
        result = env.step("find_product", {"q": query, "page": 1})
        hits = result.data if result.ok and isinstance(result.data, list) else []
        info = {"query": json.dumps(query)[:200]}
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
