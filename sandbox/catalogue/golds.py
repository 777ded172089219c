"""Gold products rebuilt from task rewards, and hard decoys that each break one constraint."""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sandbox.catalogue.generator import IdSpace, n_shops_for
from sandbox.catalogue.profile import CatalogueProfile, nearest_category
from sandbox.data_model import normalize_record
from sandbox.tasks import PriceRange, Task, TaskVoucher

DECOY_ID_BASE = 3_000_000_000  # decoy index space, disjoint from filler indices (< 1e9)


@dataclass
class GoldDraft:
    product_id: str
    titles: list[str] = field(default_factory=list)
    price_ranges: list[PriceRange] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    sku_sets: list[dict[str, str]] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    shop_id: str | None = None
    fixed_price: float | None = None
    record: dict[str, Any] | None = None
    every_task_one_shop: bool = True  # another shop breaks every task of this product
    every_task_priced: bool = True  # a price rule or a budget covers every task of this product


@dataclass
class Reconstruction:
    golds: list[dict[str, Any]]
    decoys: list[dict[str, Any]]
    decoy_log: list[dict[str, Any]]
    gold_shops: set[str]
    conflicts: list[str]


def voucher_basket_total(v: TaskVoucher) -> float:
    """Invert the voucher rule: the gold basket's total before the discount."""
    pav = float(v.price_after_voucher if v.price_after_voucher is not None else v.budget)
    if v.discount_type == "fixed":
        total = pav + float(v.face_value or 0.0)
    else:
        rate = float(v.discount or 0.0)
        cap = float(v.cap) if v.cap is not None else math.inf
        by_rate = pav / (1.0 - rate) if rate < 1 else pav + cap
        total = by_rate if by_rate * rate <= cap else pav + cap
    if total < float(v.threshold):
        total = pav  # the voucher did not apply to the gold basket
    return total


def _price_inside(r: PriceRange, rng: random.Random, fallback_log: float) -> float:
    lo, hi = r.low, r.high
    if lo is not None and hi is not None:
        if hi <= lo:
            return round(lo, 2)
        return round(lo + (hi - lo) * rng.uniform(0.1, 0.9), 2)
    if lo is not None:
        return round(max(lo * rng.uniform(1.05, 1.8), lo + 0.01), 2)
    if hi is not None:
        return round(max(0.5, hi * rng.uniform(0.45, 0.95)), 2)
    return round(max(1.0, math.exp(rng.gauss(fallback_log, 0.5))), 2)


def _price_outside(r: PriceRange | None, price: float, rng: random.Random) -> float | None:
    """A price that breaks the range, or (no range) a dearer copy that breaks a budget; None if impossible."""
    if r is None or (r.low is None and r.high is None):
        return round(price * rng.uniform(1.6, 3.0), 2)
    options = []
    if r.low is not None and r.low > 1.0:
        options.append(round(max(0.5, r.low * rng.uniform(0.5, 0.9)), 2))
    if r.high is not None:
        options.append(round(r.high * rng.uniform(1.1, 1.6) + 1.0, 2))
    return rng.choice(options) if options else None


def _intersect(ranges: list[PriceRange]) -> PriceRange | None:
    if not ranges:
        return None
    lo = max((r.low for r in ranges if r.low is not None), default=None)
    hi = min((r.high for r in ranges if r.high is not None), default=None)
    return PriceRange(low=lo, high=hi)


def _bounds(r: PriceRange | None) -> tuple[float, float]:
    low = max(0.01, r.low) if r is not None and r.low is not None else 0.01
    high = r.high if r is not None and r.high is not None else math.inf
    return low, high


def _split_within_bounds(total: float, bounds: list[tuple[float, float]], rng: random.Random) -> list[float] | None:
    """Random prices (2 decimals) inside each (low, high) that add up to `total`, if any exist."""
    if total < sum(lo for lo, _ in bounds) - 1e-6 or total > sum(hi for _, hi in bounds) + 1e-6:
        return None
    weights = [rng.uniform(0.5, 1.5) for _ in bounds]
    prices = [min(max(total * w / sum(weights), lo), hi) for w, (lo, hi) in zip(weights, bounds, strict=True)]
    for _ in range(len(bounds) * 3):
        diff = total - sum(prices)
        if abs(diff) < 1e-9:
            break
        room = [(hi - p) if diff > 0 else (p - lo) for p, (lo, hi) in zip(prices, bounds, strict=True)]
        for i in sorted(range(len(prices)), key=lambda i: -room[i]):
            step = min(abs(diff), room[i])
            prices[i] += step if diff > 0 else -step
            diff = total - sum(prices)
            if abs(diff) < 1e-9:
                break
    prices = [round(p, 2) for p in prices]
    prices[-1] = round(total - sum(prices[:-1]), 2)
    lo, hi = bounds[-1]
    return prices if lo - 0.011 <= prices[-1] <= hi + 0.011 else None


def _look_alike_title(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) >= 4:
        i = rng.randrange(1, len(words) - 1)
        if rng.random() < 0.5:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            del words[i]
    return " ".join(words)


def _other_value(values: list[str], current: str, rng: random.Random) -> str:
    pool = [v for v in values[:50] if v.lower() != current.lower()]
    return rng.choice(pool) if pool else f"other {current.split()[0]}" if current else "other"


class GoldBuilder:
    def __init__(self, profile: CatalogueProfile, seed: int, n_products: int):
        self.profile = profile
        self.seed = seed
        self.ids = IdSpace(seed)
        self.n_shops = n_shops_for(n_products)
        self.rng = random.Random(f"{seed}:golds")
        self._category_index = [(set(c.title_words), c.category) for c in profile.clusters if c.category != "Others"]
        self._decoy_counter = 0
        self._log_price_mean = sum(c.log_price for c in profile.clusters) / max(1, len(profile.clusters))

    def _random_shop(self) -> str:
        return self.ids.shop_id(self.rng.randrange(self.n_shops))

    def collect(self, tasks: list[Task]) -> tuple[dict[str, GoldDraft], list[str]]:
        drafts: dict[str, GoldDraft] = {}
        conflicts: list[str] = []

        def draft(pid: str) -> GoldDraft:
            return drafts.setdefault(pid, GoldDraft(product_id=pid))

        for task in tasks:
            one_shop = task.intent.value == "shop" or (task.voucher is not None and task.voucher.voucher_type == "shop")
            # A shop voucher binds the basket to one shop only when the budget needs the discount.
            shop_binding = task.intent.value == "shop" or (
                one_shop and voucher_basket_total(task.voucher) > task.voucher.budget)
            if task.gold_record:
                d = draft(task.gold_record["product_id"])
                d.record = task.gold_record
                d.shop_id = str(task.gold_record.get("shop_id") or d.shop_id or self._random_shop())
            shop = None
            if one_shop:
                existing = {drafts[s.product_id].shop_id for s in task.reward
                            if s.product_id in drafts and drafts[s.product_id].shop_id}
                if len(existing) > 1:
                    conflicts.append(f"{task.task_id}: gold products already live in shops {sorted(existing)}")
                shop = sorted(existing)[0] if existing else self._random_shop()
            for spec in task.reward:
                d = draft(spec.product_id)
                d.every_task_one_shop = d.every_task_one_shop and shop_binding
                d.every_task_priced = d.every_task_priced and (task.voucher is not None or spec.price_range() is not None)
                for t in spec.title:
                    if t not in d.titles:
                        d.titles.append(t)
                r = spec.price_range()
                if r is not None:
                    d.price_ranges.append(r)
                for k, v in spec.attribute_pairs():
                    if v not in d.attributes.setdefault(k, []):
                        d.attributes[k].append(v)
                if spec.sku_options:
                    merged: dict[str, str] = {}
                    for o in spec.sku_options:
                        merged.update(o)
                    d.sku_sets.append(merged)
                d.services.update(spec.service)
                if shop is not None:
                    if d.shop_id is not None and d.shop_id != shop:
                        conflicts.append(f"{task.task_id}: product {d.product_id} already in shop {d.shop_id}")
                    else:
                        d.shop_id = shop
        # Prices of voucher baskets come last: a gold product that another task also constrains
        # keeps a price inside that range, and the rest of the basket total goes to the others.
        for task in tasks:
            if task.voucher is None:
                continue
            total = voucher_basket_total(task.voucher)
            members = [draft(spec.product_id) for spec in task.reward]
            for d in members:
                if d.fixed_price is None and d.record is not None:
                    d.fixed_price = float(d.record.get("price") or 0.0)
            hard = [d for d in members if d.fixed_price is not None]
            soft = [d for d in members if d.fixed_price is None]
            rest = total - sum(d.fixed_price for d in hard)
            if not soft:
                if abs(rest) > 0.01:
                    conflicts.append(f"{task.task_id}: every gold product is priced elsewhere; "
                                     f"the basket totals {total - rest:.2f} instead of {total:.2f}")
                continue
            prices = _split_within_bounds(rest, [_bounds(_intersect(d.price_ranges)) for d in soft], self.rng)
            if prices is None:
                conflicts.append(f"{task.task_id}: no prices inside the other tasks' ranges add up to {total:.2f}")
                prices = [_price_inside(_intersect(d.price_ranges) or PriceRange(), self.rng, self._log_price_mean)
                          for d in soft]
            for d, p in zip(soft, prices, strict=True):
                d.fixed_price = p
        return drafts, conflicts

    def materialize(self, d: GoldDraft) -> dict[str, Any]:
        rng = self.rng
        if d.record is not None:
            product = normalize_record({**d.record, "product_id": d.product_id, "shop_id": d.shop_id})
        else:
            title = d.titles[0] if d.titles else "Product"
            brand = d.attributes.get("brand", [""])[0]
            category = nearest_category(title.split(), self._category_index) if self._category_index else "Others"
            product = {
                "product_id": d.product_id, "shop_id": d.shop_id or self._random_shop(),
                "brand": brand.title() if brand and brand not in ("oem", "no brand") else brand,
                "category": category, "title": title, "short_description": "", "description": "",
                "specification": "", "price": 0.0, "sold_count": rng.choice(self.profile.sold_counts),
                "sku_options": {}, "attributes": {}, "main_image_url": f"https://img.shoplab.invalid/p/{d.product_id}.jpg",
                "product_url": f"https://shoplab.invalid/products/-i{d.product_id}.html", "service": [],
            }
        attrs = product["attributes"]
        for k, vs in d.attributes.items():
            have = attrs.setdefault(k, [])
            have.extend(v for v in vs if v not in have)
        skus = product["sku_options"]
        for wanted in d.sku_sets:
            if not any(all(o.get(k) == v for k, v in wanted.items()) for o in skus.values()):
                skus[str(len(skus) + 1)] = dict(wanted)
        if d.sku_sets and len(skus) < 3 and d.record is None:
            # A second variant makes the SKU choice a real choice.
            base = dict(d.sku_sets[0])
            k = rng.choice(list(base))
            base[k] = _other_value(self.profile.sku_values.get(k, []), base[k], rng)
            skus[str(len(skus) + 1)] = base
        for s in sorted(d.services):
            if s not in product["service"]:
                product["service"].append(s)
        price_range = _intersect(d.price_ranges)
        if d.fixed_price is not None:
            product["price"] = d.fixed_price
        elif d.record is None or (price_range is not None and not price_range.contains(product["price"])):
            product["price"] = _price_inside(price_range or PriceRange(), rng, self._log_price_mean)
        if d.record is None:
            product["description"] = f"{product['title']}. " + " ".join(
                f"{k.replace('_', ' ')}: {', '.join(v)}." for k, v in attrs.items())
            product["specification"] = ";".join(f"{k}:{v[0]}" for k, v in attrs.items() if v)
        return product

    def _decoy(self, gold: dict[str, Any], broken: str, mutate) -> tuple[dict[str, Any], dict[str, Any]]:
        decoy = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in gold.items()}
        decoy["sku_options"] = {k: dict(v) for k, v in gold["sku_options"].items()}
        decoy["attributes"] = {k: list(v) for k, v in gold["attributes"].items()}
        pid = self.ids.product_id(DECOY_ID_BASE + self._decoy_counter)
        self._decoy_counter += 1
        decoy["product_id"] = pid
        decoy["main_image_url"] = f"https://img.shoplab.invalid/p/{pid}.jpg"
        decoy["product_url"] = f"https://shoplab.invalid/products/-i{pid}.html"
        decoy["title"] = _look_alike_title(gold["title"], self.rng)
        decoy["sold_count"] = max(0, int(gold["sold_count"] * self.rng.uniform(0.3, 3.0)) + self.rng.randrange(5))
        mutate(decoy)
        return decoy, {"decoy_id": pid, "gold_id": gold["product_id"], "broken": broken}

    def decoys_for(self, d: GoldDraft, gold: dict[str, Any], knowledge: list[str]) -> list[tuple[dict, dict]]:
        rng = self.rng
        out = []
        price_range = _intersect(d.price_ranges)

        # A decoy must break something: a price rule, or else a budget; never a second right answer.
        outside = _price_outside(price_range, gold["price"], rng) if d.every_task_priced else None
        if outside is not None:
            def set_price(p, outside=outside):
                p["price"] = outside
            out.append(self._decoy(gold, "price" if price_range is not None else "budget", set_price))

        for k, vs in d.attributes.items():
            for v in vs:
                def swap_attr(p, k=k, v=v):
                    other = _other_value(self.profile.attribute_values.get(k, []), v, rng)
                    p["attributes"][k] = [x if x != v else other for x in p["attributes"].get(k, [])]
                    for o in p["sku_options"].values():
                        if o.get(k) == v:
                            o[k] = other
                out.append(self._decoy(gold, f"attribute:{k}={v}", swap_attr))
        for sku in d.sku_sets:
            for k, v in sku.items():
                def swap_sku(p, k=k, v=v):
                    other = _other_value(self.profile.sku_values.get(k, []), v, rng)
                    for o in p["sku_options"].values():
                        if o.get(k) == v:
                            o[k] = other
                    if v in p["attributes"].get(k, []):
                        p["attributes"][k] = [x for x in p["attributes"][k] if x != v] or [other]
                out.append(self._decoy(gold, f"sku:{k}={v}", swap_sku))
        for s in sorted(d.services):
            def drop_service(p, s=s):
                p["service"] = [x for x in p["service"] if x != s]
            out.append(self._decoy(gold, f"service:{s}", drop_service))
        if d.every_task_one_shop:
            def move_shop(p):
                other = self._random_shop()
                while other == gold["shop_id"]:
                    other = self._random_shop()
                p["shop_id"] = other
            out.append(self._decoy(gold, "shop", move_shop))
        for kw in knowledge:
            pattern = re.compile(re.escape(kw), re.IGNORECASE)
            replacement = _other_value(self.profile.title_vocabulary[:300], kw, rng)

            def drop_knowledge(p, pattern=pattern, replacement=replacement):
                p["title"] = pattern.sub(replacement, gold["title"])
                p["description"] = pattern.sub(replacement, p["description"])
                p["short_description"] = pattern.sub(replacement, p["short_description"])
            out.append(self._decoy(gold, f"knowledge:{kw}", drop_knowledge))
        return out

    def build(self, tasks: list[Task]) -> Reconstruction:
        drafts, conflicts = self.collect(tasks)
        knowledge: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            if t.knowledge_attribute and t.gold_record:
                knowledge[t.gold_record["product_id"]].append(t.knowledge_attribute)
        golds, decoys, log = [], [], []
        for pid in sorted(drafts):
            gold = self.materialize(drafts[pid])
            golds.append(gold)
            for decoy, entry in self.decoys_for(drafts[pid], gold, knowledge.get(pid, [])):
                decoys.append(decoy)
                log.append(entry)
        return Reconstruction(golds=golds, decoys=decoys, decoy_log=log,
                              gold_shops={g["shop_id"] for g in golds}, conflicts=conflicts)
