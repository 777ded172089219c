"""A scripted agent that reads the task's reward to prove every task is solvable through the tools.

It forms queries and filters from the reward's titles and constraints but never uses the gold
product id: each product is reached through `find_product` results and checked with
`view_product_information`, exactly as an agent would.

With `query_source="instruction"` it is a teacher for distillation: its queries are the words of
the instruction that also occur in the wanted product's title, SKU options or attributes (in the
instruction's order), so every action a student is trained to copy can be read off its own input.
Only the choice among search results still uses the reward, which rejection sampling needs.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from sandbox import ShoppingEnv
from sandbox.data_model import Intent
from sandbox.scorer import (
    TITLE_THRESHOLD,
    WEB_TITLE_THRESHOLD,
    TitleSimilarity,
    budget_satisfied,
    default_title_similarity,
    score_product,
)
from sandbox.tasks import ProductSpec
from sandbox.tools import MAX_QUERY_CHARS

_CANDIDATE_ID = "__candidate__"  # makes the scorer judge by rules, never by id
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP = frozenset("a an and the for with of in on to from by or that is are be i me my it its all any some "
                  "same shop show find need want looking look can you help please".split())


def grounded_query(instruction: str, spec: ProductSpec) -> str:
    """The instruction's words that name this product (title, SKU and attribute words), in order."""
    vocabulary = set(_TOKEN.findall(" ".join([*spec.title, *(v for _, v in spec.sku_pairs()),
                                              *(v for _, v in spec.attribute_pairs())]).lower()))
    words = [w for w in _TOKEN.findall(instruction.lower()) if w in vocabulary and w not in _STOP]
    return " ".join(dict.fromkeys(words))


class OracleAgent:
    name = "oracle"

    def __init__(self, similarity: TitleSimilarity | None = None, max_pages: int = 3, per_spec: int = 5,
                 query_source: str = "title", visible_hits: int = 10):
        if query_source not in ("title", "instruction"):
            raise ValueError("query_source must be 'title' or 'instruction'")
        self.query_source = query_source
        # Only the first `visible_hits` results of a page are considered: a teacher for a student that
        # sees shortened observations must pick among what the student sees.
        self.visible_hits = visible_hits
        if query_source == "instruction":
            self.name = "teacher"
        self.similarity = similarity or default_title_similarity()
        self.max_pages = max_pages
        self.per_spec = per_spec

    # -- tool helpers -------------------------------------------------------------
    def _search(self, env: ShoppingEnv, q: str, page: int = 1, **filters: Any) -> list[dict[str, Any]]:
        args = {"q": q[:MAX_QUERY_CHARS], "page": page, **{k: v for k, v in filters.items() if v}}
        result = env.step("find_product", args)
        return result.data if result.ok and isinstance(result.data, list) else []

    def _details(self, env: ShoppingEnv, ids: list[str], cache: dict[str, dict[str, Any]]) -> None:
        todo = [i for i in ids if i not in cache]
        for start in range(0, len(todo), 10):
            result = env.step("view_product_information", {"product_ids": ",".join(todo[start:start + 10])})
            for item in result.data or []:
                if "error" not in item:
                    cache[item["product_id"]] = item

    @staticmethod
    def _filters(spec: ProductSpec) -> dict[str, Any]:
        r = spec.price_range()
        return {"price": r.as_filter() if r else None, "service": ",".join(spec.service) or None}

    def _queries(self, spec: ProductSpec, env: ShoppingEnv | None = None) -> list[str]:
        if self.query_source == "instruction" and env is not None:
            q = grounded_query(env.instruction, spec)
            return [q] if q else []
        title = spec.title[0]
        values = " ".join(v for _, v in spec.sku_pairs() + spec.attribute_pairs())
        return [title, f"{' '.join(title.split()[:8])} {values}".strip()]

    def _title_matches(self, hits: list[dict[str, Any]], spec: ProductSpec) -> list[dict[str, Any]]:
        """Hits whose title meets every title rule of `spec` (one embedding batch per page)."""
        warm = getattr(self.similarity, "embed_many", None)
        if warm is not None:
            warm([h["title"] for h in hits] + spec.title)
        return [h for h in hits if all(self.similarity(h["title"], t) >= TITLE_THRESHOLD for t in spec.title)]

    def _satisfies(self, spec: ProductSpec, product: dict[str, Any]) -> bool:
        return score_product({**product, "product_id": _CANDIDATE_ID}, spec, self.similarity).score >= 1.0

    def candidates(self, env: ShoppingEnv, spec: ProductSpec, cache: dict[str, dict[str, Any]], shop_id: str | None = None,
                   sort: str | None = None, want: int = 1, knowledge: str | None = None,
                   max_pages: int | None = None, n_queries: int = 2) -> list[dict[str, Any]]:
        """Products (search hit + details) that meet every constraint of `spec`."""
        found: dict[str, dict[str, Any]] = {}
        for q in self._queries(spec, env)[:n_queries]:
            for page in range(1, (max_pages or self.max_pages) + 1):
                if env.state.steps >= env.max_steps - 3:
                    return list(found.values())
                hits = self._search(env, q, page, shop_id=shop_id, sort=sort, **self._filters(spec))
                if not hits:
                    break
                # Cheap checks on the hit first; only plausible hits are opened.
                plausible = [h for h in self._title_matches(hits[:self.visible_hits], spec)
                             if h["product_id"] not in found]
                self._details(env, [h["product_id"] for h in plausible], cache)
                for h in plausible:
                    detail = cache.get(h["product_id"])
                    if detail is None:
                        continue
                    product = {**h, **detail}
                    if knowledge is not None:
                        text = (product["title"] + " " + product.get("description", "")).lower()
                        ok = knowledge.lower() in text and \
                            self.similarity(product["title"], spec.title[0]) >= WEB_TITLE_THRESHOLD
                    else:
                        ok = self._satisfies(spec, product)
                    if ok:
                        found[h["product_id"]] = product
                if len(found) >= want:
                    return list(found.values())
        return list(found.values())

    # -- intents ------------------------------------------------------------------
    def _solve_single(self, env: ShoppingEnv, cache: dict) -> list[str]:
        task = env.task
        knowledge = task.knowledge_attribute if task.intent == Intent.web else None
        found = self.candidates(env, task.reward[0], cache, knowledge=knowledge)
        return [found[0]["product_id"]] if found else []

    def _solve_one_shop(self, env: ShoppingEnv, cache: dict, budget_check: bool) -> list[str]:
        task = env.task
        specs = task.reward
        for shop in self._shared_shops(env, specs):
            picks = []
            for spec in specs:
                found = self.candidates(env, spec, cache, shop_id=shop, want=self.per_spec if budget_check else 1,
                                        sort="priceasc" if budget_check else None, max_pages=1, n_queries=1)
                if not found:
                    break
                picks.append(found)
            else:
                for combo in itertools.product(*picks):
                    if not budget_check or budget_satisfied(list(combo), task.voucher):
                        return [p["product_id"] for p in combo]
        # Anchor on the most selective request: fewer look-alikes satisfy it, so fewer wrong shops.
        order = sorted(range(len(specs)), key=lambda i: -specs[i].n_constraints())
        anchor_index = order[0]
        anchors = self.candidates(env, specs[anchor_index], cache, want=self.per_spec, max_pages=2)
        for anchor in anchors:
            picks: dict[int, list[dict[str, Any]]] = {anchor_index: [anchor]}
            for i in order[1:]:
                # Within one shop a single page of the title query is enough.
                found = self.candidates(env, specs[i], cache, shop_id=anchor["shop_id"],
                                        want=self.per_spec if budget_check else 1,
                                        sort="priceasc" if budget_check else None, max_pages=1, n_queries=1)
                if not found:
                    break
                picks[i] = found
            else:
                for combo in itertools.product(*(picks[i] for i in range(len(specs)))):
                    if not budget_check or budget_satisfied(list(combo), task.voucher):
                        return [p["product_id"] for p in combo]
        return []

    def _shared_shops(self, env: ShoppingEnv, specs: list[ProductSpec], pages: int = 2) -> list[str]:
        """Shops whose products plausibly match every request, judged from search hits alone."""
        shared: set[str] | None = None
        for spec in specs:
            shops: set[str] = set()
            for page in range(1, pages + 1):
                queries = self._queries(spec, env)
                hits = self._search(env, queries[0], page, **self._filters(spec)) if queries else []
                shops.update(h["shop_id"] for h in self._title_matches(hits, spec))
                if len(hits) < 10:
                    break
            shared = shops if shared is None else shared & shops
            if not shared:
                return []
        return sorted(shared or [])[:3]

    def _solve_platform_voucher(self, env: ShoppingEnv, cache: dict) -> list[str]:
        task = env.task
        per_spec = []
        for spec in task.reward:
            found = self.candidates(env, spec, cache, want=3, sort="priceasc", max_pages=2, n_queries=1)
            if not found:
                found = self.candidates(env, spec, cache, want=1, max_pages=2)
            if not found:
                return []
            per_spec.append(sorted(found, key=lambda p: p["price"]))
        for combo in itertools.product(*per_spec):
            if budget_satisfied(list(combo), task.voucher):
                return [p["product_id"] for p in combo]
        return [p[0]["product_id"] for p in per_spec]

    def run_episode(self, env: ShoppingEnv) -> dict[str, Any] | None:
        task = env.task
        if task is None:
            raise ValueError("the oracle needs a task")
        cache: dict[str, dict[str, Any]] = {}
        if task.intent in (Intent.product, Intent.web):
            ids = self._solve_single(env, cache)
        elif task.intent == Intent.shop:
            ids = self._solve_one_shop(env, cache, budget_check=False)
        elif task.voucher is not None and task.voucher.voucher_type == "shop":
            ids = self._solve_one_shop(env, cache, budget_check=True)
        else:
            ids = self._solve_platform_voucher(env, cache)
        if ids:
            env.step("recommend_product", {"product_ids": ",".join(ids)})
        env.step("terminate", {"status": "success" if ids else "failure"})
        return {"solved": bool(ids)}
