"""Deterministic, streaming generation of filler products that resemble the real records.

Product `i` depends only on (seed, i // CHUNK), so any prefix of the stream is reproducible and
memory stays constant however many products are asked for.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.catalogue.profile import CatalogueProfile
from sandbox.data_model import SERVICES

CHUNK = 10_000
_PRODUCT_MOD = 8_999_999_993  # prime: i -> (A*i + B) mod P is a bijection, so ids never repeat
_SHOP_MOD = 89_999_999
_SYLLABLES = ("ka", "lu", "mi", "no", "ra", "zen", "tor", "vi", "sa", "pel", "qu", "dro", "mak", "li", "bo", "ne")


@dataclass(frozen=True)
class IdSpace:
    """Product and shop ids that look like Lazada's (10- and 7/8-digit numbers) and never collide."""

    seed: int = 0

    def product_id(self, i: int) -> str:
        a = 2_654_435_761 + 2 * (self.seed % 1000)
        return str(1_000_000_000 + (a * i + 7_919 * (self.seed + 1)) % _PRODUCT_MOD)

    def shop_id(self, k: int) -> str:
        a = 40_503 + 2 * (self.seed % 1000)
        return str(1_000_000 + (a * k + 104_729 * (self.seed + 1)) % _SHOP_MOD)


def shop_name(k: int) -> str:
    rng = random.Random(f"shop:{k}")
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return f"{name} {rng.choice(['Store', 'Shop', 'Official', 'Trading', 'Mart', 'PH'])}"


def n_shops_for(n_products: int) -> int:
    return max(50, n_products // 50)


class FillerGenerator:
    """Products seeded by real records: a seed record's title words, attribute keys and price level,
    recombined with the global vocabularies learned from all records."""

    def __init__(self, profile: CatalogueProfile, seed: int, n_products: int, reserved_ids: set[str] | None = None):
        self.profile = profile
        self.seed = seed
        self.ids = IdSpace(seed)
        self.n_shops = n_shops_for(n_products)
        self.reserved = reserved_ids or set()
        self._vocab = profile.title_vocabulary[:5000] or ["item"]
        self._brands = profile.brands[:2000] or ["OEM"]
        self._attr = {k: v[:40] for k, v in profile.attribute_values.items() if v}
        self._attr_keys = list(self._attr)
        self._sku = {k: v[:40] for k, v in profile.sku_values.items() if v}
        self._clusters = [c for c in profile.clusters if c.title_words] or profile.clusters
        self._sold = profile.sold_counts
        self._rates = [(s, profile.service_rates.get(s, 0.3)) for s in SERVICES]

    def shop_for(self, rng: random.Random) -> str:
        # Skewed: a few shops hold many products, most hold a handful.
        return self.ids.shop_id(int(self.n_shops * rng.random() ** 2))

    def product_id(self, i: int) -> str:
        pid = self.ids.product_id(i)
        salt = 0
        while pid in self.reserved:  # never reuse a gold product's id
            salt += 1
            pid = self.ids.product_id(i + salt * 4_000_000_000)
        return pid

    def make(self, i: int, rng: random.Random) -> dict[str, Any]:
        c = self._clusters[rng.randrange(len(self._clusters))]
        words = [w for w in c.title_words if rng.random() < 0.7] or c.title_words[:2]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), self._vocab[int(len(self._vocab) * rng.random() ** 2)])
        brand = self._brands[int(len(self._brands) * rng.random() ** 2)] if rng.random() < 0.6 else ""
        if brand and rng.random() < 0.5:
            words.insert(0, brand)
        title = " ".join(words)

        attributes: dict[str, list[str]] = {}
        for k in c.attribute_keys:
            vals = self._attr.get(k)
            if vals and rng.random() < 0.8:
                attributes[k] = [vals[int(len(vals) * rng.random() ** 1.5)]]
        if self._attr_keys and rng.random() < 0.5:
            k = self._attr_keys[rng.randrange(len(self._attr_keys))]
            attributes.setdefault(k, [self._attr[k][rng.randrange(len(self._attr[k]))]])
        if brand:
            attributes.setdefault("brand", [brand.lower()])

        sku_options: dict[str, dict[str, str]] = {}
        sku_keys = [k for k in c.sku_keys if k in self._sku]
        if sku_keys:
            for n in range(1, rng.randint(1, 4) + 1):
                sku_options[str(n)] = {k: self._sku[k][rng.randrange(len(self._sku[k]))] for k in sku_keys}

        price = round(max(1.0, pow(2.718281828, rng.gauss(c.log_price, self.profile.log_price_sigma))), 2)
        service = [s for s, p in self._rates if rng.random() < p]
        sold = self._sold[rng.randrange(len(self._sold))]
        sold = int(sold * (0.5 + rng.random())) + (rng.randrange(50) if rng.random() < 0.3 else 0)
        pid = self.product_id(i)
        spec_text = ";".join(f"{k}:{v[0]}" for k, v in attributes.items())
        return {
            "product_id": pid,
            "shop_id": self.shop_for(rng),
            "brand": brand,
            "category": c.category,
            "title": title,
            "short_description": "",
            "description": f"{title}. " + " ".join(f"{k.replace('_', ' ')}: {v[0]}." for k, v in attributes.items()),
            "specification": spec_text,
            "price": price,
            "sold_count": sold,
            "sku_options": sku_options,
            "attributes": attributes,
            "main_image_url": f"https://img.shoplab.invalid/p/{pid}.jpg",
            "product_url": f"https://shoplab.invalid/products/-i{pid}.html",
            "service": service,
        }

    def stream(self, n: int, start: int = 0) -> Iterator[dict[str, Any]]:
        i = start
        end = start + n
        while i < end:
            chunk = i // CHUNK
            rng = random.Random(f"{self.seed}:filler:{chunk}")
            # Fast-forward within a chunk so that product i is the same whatever `start` was.
            offset = i - chunk * CHUNK
            for _ in range(offset):
                self.make(chunk * CHUNK, rng)
            stop = min(end, (chunk + 1) * CHUNK)
            for j in range(i, stop):
                yield self.make(j, rng)
            i = stop
