"""Test support for the Elasticsearch backend: an osmem-server fixture, a header adapter, test products.

osmem-server (an in-memory OpenSearch-compatible server shipped in a wheel) answers 406 to the
`application/vnd.elasticsearch+json; compatible-with=9` media types the official 9.x client sends;
`CompatHeadersNode` rewrites them to plain JSON / NDJSON. Real Elasticsearch 8/9 clusters accept the
compatibility headers, so the adapter lives here, in the tests, and nowhere in the product code.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import HttpHeaders, Urllib3HttpNode

from sandbox.data_model import SERVICES

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "shoppingbench"

_COMPAT = re.compile(r"application/vnd\.elasticsearch\+(json|x-ndjson)\s*;\s*compatible-with=\d+", re.I)


def plain_media_type(value: str) -> str:
    """`application/vnd.elasticsearch+json; compatible-with=9` -> `application/json` (ndjson alike)."""
    return _COMPAT.sub(lambda m: "application/" + m.group(1).lower(), value)


class CompatHeadersNode(Urllib3HttpNode):
    """Urllib3 node that sends plain JSON media types instead of Elasticsearch's compatibility ones."""

    def __init__(self, config: Any):
        super().__init__(config)
        self._headers = self._rewrite(self._headers)

    @staticmethod
    def _rewrite(headers: Any) -> Any:
        if not headers:
            return headers
        out = HttpHeaders()
        for key, value in headers.items():
            if key.lower() in ("content-type", "accept") and isinstance(value, str):
                value = plain_media_type(value)
            out[key] = value
        return out

    def perform_request(self, method: str, target: str, body: bytes | None = None,
                        headers: Any = None, **kwargs: Any) -> Any:
        return super().perform_request(method, target, body=body, headers=self._rewrite(headers), **kwargs)


@pytest.fixture(scope="session")
def es_server_url() -> Iterator[str]:
    """URL of a fresh, writable osmem-server on a free port, for the whole session."""
    from osmem_server import OsmemServer

    server = OsmemServer.start(freeze=False, japanese=False)  # default address 127.0.0.1:0 picks a free port
    try:
        yield server.url
    finally:
        server.close()


# -- deterministic ShoppingBench-shaped products -----------------------------------------------

def _load_reward_material() -> dict[str, list]:
    """Titles, categories, brands, SKU options and attributes from the ShoppingBench task files."""
    titles: dict[str, None] = {}
    categories: dict[str, None] = {}
    brands: dict[str, None] = {}
    sku: dict[tuple[str, str], None] = {}
    attrs: dict[tuple[str, str], None] = {}
    for path in sorted(DATA_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            reward = json.loads(line).get("reward")
            for r in reward if isinstance(reward, list) else [reward]:
                if not isinstance(r, dict):
                    continue
                for t in r.get("title") if isinstance(r.get("title"), list) else [r.get("title")]:
                    if isinstance(t, str) and t.strip():
                        titles.setdefault(t.strip(), None)
                if r.get("category"):
                    categories.setdefault(r["category"], None)
                if r.get("brand"):
                    brands.setdefault(r["brand"], None)
                options = r.get("sku_options") or []
                for o in options.values() if isinstance(options, dict) else options:
                    for k, v in (o or {}).items():
                        sku.setdefault((str(k), str(v)), None)
                attributes = r.get("attributes") or []
                for a in [attributes] if isinstance(attributes, dict) else attributes:
                    for k, vs in (a or {}).items():
                        for v in vs if isinstance(vs, list) else [vs]:
                            attrs.setdefault((str(k), str(v)), None)
    if not titles:
        raise FileNotFoundError(f"no ShoppingBench task files with titles under {DATA_DIR}")
    return {"titles": list(titles), "categories": list(categories) or ["Home & Living"],
            "brands": list(brands) or ["No Brand"], "sku": list(sku), "attrs": list(attrs)}


_MATERIAL: dict[str, list] | None = None
_EXTRA_WORDS = ("new", "original", "2024", "premium", "set", "pack", "mini", "pro", "black", "white",
                "blue", "red", "large", "small", "kids", "men", "women", "cotton", "steel", "sale")


def make_test_products(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` products with ShoppingBench's 15 fields, drawn deterministically from the reward titles.

    Titles are reused with small edits (a word dropped, a word added) so that the catalogue has
    duplicates, near-duplicates and repeated words, as a marketplace has.
    """
    global _MATERIAL
    if _MATERIAL is None:
        _MATERIAL = _load_reward_material()
    m = _MATERIAL
    rng = random.Random(seed)
    shops = [str(1_000_000 + rng.randrange(9_000_000)) for _ in range(max(5, n // 60))]
    ids = rng.sample(range(1_000_000_000, 6_000_000_000), n)
    products = []
    for i in range(n):
        words = rng.choice(m["titles"]).split()
        edit = rng.random()
        if edit < 0.25 and len(words) > 3:
            del words[rng.randrange(len(words))]
        elif edit < 0.5:
            words.insert(rng.randrange(len(words) + 1), rng.choice(_EXTRA_WORDS))
        title = " ".join(words)
        sku_options = {str(j + 1): dict([rng.choice(m["sku"])]) for j in range(rng.choice((0, 1, 1, 2, 3)))} \
            if m["sku"] else {}
        attributes: dict[str, list[str]] = {}
        for k, v in rng.sample(m["attrs"], min(len(m["attrs"]), rng.choice((0, 1, 2, 3)))):
            attributes.setdefault(k, []).append(v)
        pid = str(ids[i])
        products.append({
            "product_id": pid,
            "shop_id": rng.choice(shops),
            "brand": rng.choice(m["brands"]) if rng.random() < 0.4 else "",
            "category": rng.choice(m["categories"]),
            "title": title,
            "short_description": f"{title}. Fast delivery." if rng.random() < 0.5 else "",
            "description": f"{title} - quality guaranteed, ships in 1-3 days.",
            "specification": f"warranty type:{rng.choice(['no warranty', 'local warranty', 'supplier warranty'])}",
            "price": round(rng.uniform(5, 5000) if rng.random() < 0.8 else rng.choice([99.0, 199.0, 499.0]), 2),
            "sold_count": int(rng.expovariate(1 / 300)) if rng.random() < 0.9 else 0,
            "sku_options": sku_options,
            "attributes": attributes,
            "main_image_url": f"https://img.example.test/{pid}.jpg",
            "product_url": f"https://shop.example.test/products/-i{pid}.html",
            "service": [s for s in SERVICES if rng.random() < 0.3],
        })
    return products
