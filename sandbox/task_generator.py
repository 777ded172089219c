"""Training tasks drawn from the catalogue's generated products, never from the evaluation tasks.

ShoppingBench synthesises instructions by sampling requirements from a real product and asking
GPT-4.1 to write the request (METHODS.md §7). The sampling is reproduced here field by field:
the title is always required, at most one SKU option and each attribute with probability 1/2,
each service flag with probability 1/2, and a price constraint whose bounds are `price ± U(0, price)`
with the price strictly inside. An LLM is not available offline, so the request is written from
templates instead: several openers, phrasings for each service and price mode, and a 2-3 word
span of the title standing in for the "short category name". The phrasings follow the dev tasks'
own wording ("LazFlash deals", "priced above 55 PHP"), so a model trained on them meets familiar
words at evaluation; the sentence structure is plainer than an LLM's, which is the gap to expect.

Products come from `ShoppingWorld.filler_products`: the generated part of the catalogue, not the
evaluation golds or their decoys.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sandbox.data_model import Intent
from sandbox.tasks import ProductSpec, Task, task_id_for

OPENERS = ["I'm looking for", "Show me", "Find", "I need", "Looking for", "Can you find", "Help me find",
           "I want to buy", "Search for", "Please find"]
SERVICE_PHRASES = {
    "official": ["from an official LazMall store", "sold by an official store", "from LazMall"],
    "freeShipping": ["with free shipping", "that ships for free", "with free delivery"],
    "COD": ["with cash on delivery", "that I can pay for on delivery (COD)", "with COD available"],
    "flashsale": ["with LazFlash deals", "on flash sale", "that is part of a LazFlash sale"],
}
PRICE_PHRASES = {
    "less than": ["under {hi} pesos", "below {hi} PHP", "for less than {hi} PHP", "that costs less than {hi} pesos"],
    "greater than": ["over {lo} PHP", "priced above {lo} pesos", "that costs more than {lo} PHP", "above {lo} pesos"],
    "between": ["between {lo} and {hi} pesos", "priced from {lo} to {hi} PHP", "in the {lo}-{hi} PHP range"],
}
_WORD = re.compile(r"^[a-z][a-z'-]*$")
_FUNCTION_WORDS = frozenset("for with and the of in on to from by or new hot sale free".split())


@dataclass
class TaskGeneratorConfig:
    n_product: int = 300
    n_shop: int = 0
    seed: int = 0
    start: int = 0              # first filler product used: disjoint ranges give disjoint task sets
    pool: int = 20_000          # filler products sampled from
    p_attribute: float = 0.5
    p_sku: float = 0.5
    p_service: float = 0.5
    p_price: float = 0.7
    max_attributes: int = 2


def _category_phrase(product: dict[str, Any], rng: random.Random) -> str | None:
    """A 2-3 word span of the title (brand left out, no span starting or ending on a function word)."""
    brand_words = set(str(product.get("brand") or "").lower().split())
    words = [w.lower() for w in str(product["title"]).split()]
    spans = []
    for size in (2, 3):
        for start in range(0, len(words) - size + 1):
            span = words[start:start + size]
            if all(_WORD.match(w) and len(w) >= 3 and w not in brand_words for w in span) \
                    and span[0] not in _FUNCTION_WORDS and span[-1] not in _FUNCTION_WORDS:
                spans.append(span)
    return " ".join(rng.choice(spans)) if spans else None


def _price_constraint(price: float, rng: random.Random) -> tuple[dict[str, list], str] | None:
    if price <= 2:
        return None
    mode = rng.choice(list(PRICE_PHRASES))
    lo = int(max(0, price - rng.uniform(0.05, 1.0) * price))
    hi = int(price + rng.uniform(0.05, 1.0) * price) + 1
    if not (lo < price < hi):
        return None
    bounds = {"less than": [None, hi], "greater than": [lo, None], "between": [lo, hi]}[mode]
    return {mode: bounds}, rng.choice(PRICE_PHRASES[mode]).format(lo=lo, hi=hi)


def sample_requirements(product: dict[str, Any], rng: random.Random, cfg: TaskGeneratorConfig,
                        with_price: bool = True) -> tuple[ProductSpec, str] | None:
    """One product's reward spec and the phrase that asks for it (None if the title gives no phrase)."""
    phrase = _category_phrase(product, rng)
    if phrase is None:
        return None
    spec: dict[str, Any] = {"product_id": product["product_id"], "title": [product["title"]]}
    parts = [phrase]
    skus = [s for s in (product.get("sku_options") or {}).values() if s]
    if skus and rng.random() < cfg.p_sku:
        key, value = rng.choice(sorted(rng.choice(skus).items()))
        spec["sku_options"] = [{key: value}]
        parts.append(f"in {value}")
    attrs = [(k, v) for k, vals in sorted((product.get("attributes") or {}).items()) for v in vals[:1]
             if k != "brand" and v]
    rng.shuffle(attrs)
    chosen = [a for a in attrs if rng.random() < cfg.p_attribute][:cfg.max_attributes]
    if chosen:
        spec["attributes"] = [{k: [v]} for k, v in chosen]
        parts.append("with " + " and ".join(f"{k.replace('_', ' ')} {v}" for k, v in chosen))
    services = [s for s in product.get("service") or [] if s in SERVICE_PHRASES and rng.random() < cfg.p_service]
    if services:
        spec["service"] = services
        parts += [rng.choice(SERVICE_PHRASES[s]) for s in services]
    if with_price and rng.random() < cfg.p_price:
        price = _price_constraint(float(product["price"]), rng)
        if price is not None:
            spec["price"] = [price[0]]
            parts.append(price[1])
    return ProductSpec.model_validate(spec), _join(parts)


def _join(parts: list[str]) -> str:
    head, rest = parts[0], parts[1:]
    if len(rest) <= 1:
        return " ".join([head] + rest)
    return f"{head} {', '.join(rest[:-1])} and {rest[-1]}"


def generate_tasks(world, cfg: TaskGeneratorConfig | None = None) -> list[Task]:
    """Product (and shop) tasks over filler products, deterministic in `cfg.seed`."""
    cfg = cfg or TaskGeneratorConfig()
    rng = random.Random(cfg.seed)
    products = world.filler_products(cfg.pool, start=cfg.start)
    if not products:
        raise ValueError("this sandbox has no generated products to draw training tasks from")
    order = list(range(len(products)))
    rng.shuffle(order)
    tasks: list[Task] = []
    seen: set[str] = set()

    def add(task: Task) -> None:
        if task.task_id not in seen:
            seen.add(task.task_id)
            tasks.append(task)

    used: set[int] = set()
    for i in order:
        if sum(t.intent == Intent.product for t in tasks) >= cfg.n_product:
            break
        sampled = sample_requirements(products[i], rng, cfg)
        if sampled is None:
            continue
        spec, phrase = sampled
        used.add(i)
        query = f"{rng.choice(OPENERS)} {_article(phrase)}."
        add(Task(task_id=task_id_for(Intent.product, query), intent=Intent.product, query=query, reward=[spec],
                 source="generated"))
    by_shop: dict[str, list[int]] = defaultdict(list)
    for i in order:
        if i not in used:
            by_shop[str(products[i]["shop_id"])].append(i)
    shops = [s for s in sorted(by_shop) if len(by_shop[s]) >= 2]
    rng.shuffle(shops)
    for shop in shops:
        if sum(t.intent == Intent.shop for t in tasks) >= cfg.n_shop:
            break
        members = by_shop[shop][:rng.randint(2, min(3, len(by_shop[shop])))]
        sampled = [sample_requirements(products[i], rng, cfg, with_price=False) for i in members]
        if any(s is None for s in sampled):
            continue
        phrases = [_article(p) for _, p in sampled]
        query = (f"{rng.choice(OPENERS)} {', '.join(phrases[:-1])} and {phrases[-1]}, "
                 f"all from the same shop.")
        add(Task(task_id=task_id_for(Intent.shop, query), intent=Intent.shop, query=query,
                 reward=[s for s, _ in sampled], source="generated"))
    return tasks


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase
