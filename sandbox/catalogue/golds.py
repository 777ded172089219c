"""Gold products rebuilt from task rewards, and hard decoys that each break one constraint."""

from __future__ import annotations

import copy
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.catalogue.generator import IdSpace, n_shops_for
from sandbox.catalogue.profile import CatalogueProfile, learn_profile, nearest_category
from sandbox.data_model import normalize_record
from sandbox.engines.base import analyze
from sandbox.scorer import budget_satisfied, score_episode, score_product
from sandbox.tasks import (
    BadTasksError,
    PriceRange,
    ProductSpec,
    Task,
    TaskVoucher,
    describe_price_constraint,
    unsatisfiable,
)

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
    specs: list[tuple[str, ProductSpec]] = field(default_factory=list)  # (where, spec) of every task asking for it
    record_where: str = ""  # the knowledge task whose full record this product is


@dataclass
class Reconstruction:
    golds: list[dict[str, Any]]
    decoys: list[dict[str, Any]]
    decoy_log: list[dict[str, Any]]
    gold_shops: set[str]
    conflicts: list[str]  # "task_id: file:line: why": tasks that cannot be built (none in a finished build)
    bad_tasks: set[str] = field(default_factory=set)  # their task ids
    decoys_repaired: int = 0  # decoys that met every rule of a task sharing their gold, until made to break one
    decoys_dropped: int = 0  # decoys that no single further change could keep from being a right answer


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
    """A whole-cent price inside a (non-empty) range: builds check `PriceRange.is_empty` first."""
    lo, hi = r.low, r.high
    if lo is not None and hi is not None:
        price = lo if hi <= lo else lo + (hi - lo) * rng.uniform(0.1, 0.9)
    elif lo is not None:
        price = max(lo * rng.uniform(1.05, 1.8), lo + 0.01)
    elif hi is not None:
        price = max(0.5, hi * rng.uniform(0.45, 0.95))
    else:
        price = max(1.0, math.exp(rng.gauss(fallback_log, 0.5)))
    low_cents, high_cents = r.cents()
    cents = max(round(round(price, 2) * 100), low_cents)  # rounding, or the 0.5 floor, must not leave the range
    return (cents if high_cents is None else min(cents, high_cents)) / 100


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
    """The whole-cent prices of a range, from 1 cent up: rounding a price inside to cents keeps it inside."""
    if r is None:
        return 0.01, math.inf
    low, high = r.cents()
    return low / 100, math.inf if high is None else high / 100


def _split_within_bounds(total: float, bounds: list[tuple[float, float]], rng: random.Random,
                         counts: list[int] | None = None) -> list[float] | None:
    """Random whole-cent prices inside each (low, high) such that the basket, holding `counts[i]` of product
    i (default one each), costs `total` (to the cent), if any exist."""
    counts = counts or [1] * len(bounds)
    per_unit = bounds
    bounds = [(lo * m, hi * m) for (lo, hi), m in zip(per_unit, counts, strict=True)]
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
    # In whole cents, each inside its bounds (a gold priced a cent outside its own rule would fail it); what
    # rounding leaves over goes to the last product, then to any other with room.
    lows = [round(lo * 100) for lo, _ in per_unit]
    highs = [math.inf if hi == math.inf else round(hi * 100) for _, hi in per_unit]
    cents = [min(max(round(p * 100 / m), lo), hi) for p, m, lo, hi in zip(prices, counts, lows, highs, strict=True)]
    left = round(total * 100) - sum(c * m for c, m in zip(cents, counts, strict=True))
    for i in reversed(range(len(cents))):
        step = int(left / counts[i])  # towards zero: whole units of this product's count
        step = min(max(step, lows[i] - cents[i]), highs[i] - cents[i])
        cents[i] += step
        left -= step * counts[i]
    return None if left else [c / 100 for c in cents]


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


def _title_alike(a: str, b: str) -> float:
    """Titles of one product: the words of one are all in the other (a stand-in for the scorer's model)."""
    wa, wb = set(analyze(a)), set(analyze(b))
    return 1.0 if wa and wb and (wa <= wb or wb <= wa) else 0.0


def _record_breaks(record: dict[str, Any], spec: ProductSpec) -> list[str]:
    """The rules of `spec` a knowledge task's full record breaks, as the scorer reads them."""
    return score_product({**record, "product_id": "\x00"}, spec, _title_alike).unmet()


def _neutral_title(_a: str, _b: str) -> float:
    return 1.0


def generated_texts(product: dict[str, Any], title: str | None = None) -> tuple[str, str]:
    """The description and specification of a generated product: its title (or `title`), then every attribute."""
    attrs = product["attributes"]
    description = f"{title or product['title']}. " + " ".join(
        f"{k.replace('_', ' ')}: {', '.join(v)}." for k, v in attrs.items())
    return description, ";".join(f"{k}:{v[0]}" for k, v in attrs.items() if v)


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

    def collect(self, tasks: list[Task], where: Mapping[str, str] | None = None
                ) -> tuple[dict[str, GoldDraft], list[tuple[Task, str]]]:
        """Gold drafts from every task, and (task, why) for each task that cannot be built: unsatisfiable on
        its own, or contradicting an earlier task (checked before the task changes anything, so one bad
        task never makes the next one look bad)."""
        where = where or {}
        drafts: dict[str, GoldDraft] = {}
        problems: list[tuple[Task, str]] = []

        def draft(pid: str) -> GoldDraft:
            return drafts.setdefault(pid, GoldDraft(product_id=pid))

        for task in tasks:
            at = where.get(task.task_id, task.source or task.task_id)
            one_shop = task.intent.value == "shop" or (task.voucher is not None and task.voucher.voucher_type == "shop")
            # A shop voucher binds the basket to one shop only when the budget needs the discount.
            shop_binding = task.intent.value == "shop" or (
                one_shop and voucher_basket_total(task.voucher) > task.voucher.budget)
            reasons = unsatisfiable(task) or self._conflicts(task, drafts)
            existing: set[str] = set()
            if one_shop and not reasons:
                existing = {drafts[s.product_id].shop_id for s in task.reward
                            if s.product_id in drafts and drafts[s.product_id].shop_id}
                if len(existing) > 1:
                    reasons.append(f"its gold products already live in different shops {sorted(existing)} "
                                   "(set by earlier tasks)")
            if reasons:
                problems += [(task, r) for r in reasons]
                continue
            if task.gold_record:
                d = draft(task.gold_record["product_id"])
                d.record = task.gold_record
                d.record_where = d.record_where or at
                d.shop_id = str(task.gold_record.get("shop_id") or d.shop_id or self._random_shop())
            shop = None
            if one_shop:
                shop = sorted(existing)[0] if existing else self._random_shop()
            for spec in task.reward:
                d = draft(spec.product_id)
                if task.gold_record is None:
                    d.specs.append((at, spec))
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
                merged: dict[str, str] = {}
                for o in spec.sku_options:
                    merged.update(o)
                if merged:
                    d.sku_sets.append(merged)
                d.services.update(spec.service)
                if shop is not None:
                    d.shop_id = shop
        # Prices of voucher baskets come last: a gold product that another task also constrains
        # keeps a price inside that range, and the rest of the basket total goes to the others.
        rejected = {t.task_id for t, _ in problems}
        for task in tasks:
            if task.voucher is None or task.task_id in rejected:
                continue
            total = voucher_basket_total(task.voucher)
            members = [drafts[spec.product_id] for spec in task.reward]
            for d in members:
                if d.fixed_price is None and d.record is not None:
                    d.fixed_price = float(d.record.get("price") or 0.0)
            hard = [d for d in members if d.fixed_price is not None]
            counts: dict[str, int] = {}
            for d in members:
                if d.fixed_price is None:
                    counts[d.product_id] = counts.get(d.product_id, 0) + 1  # a product listed twice is bought twice
            soft = [drafts[pid] for pid in counts]
            rest = total - sum(d.fixed_price for d in hard)
            if not soft:
                basket = [{"price": d.fixed_price, "shop_id": d.shop_id} for d in members]
                if abs(rest) > 0.01 and not budget_satisfied(basket, task.voucher):
                    problems.append((task, f"every gold product is priced by another task; the basket totals "
                                           f"{total - rest:.2f}, over its budget with the voucher"))
                continue
            prices = _split_within_bounds(rest, [_bounds(_intersect(d.price_ranges)) for d in soft], self.rng,
                                          list(counts.values()))
            if prices is None:
                problems.append((task, f"no prices inside its products' price rules (its own and other tasks') "
                                       f"add up to the basket's {total:.2f}"))
                continue
            for d, p in zip(soft, prices, strict=True):
                d.fixed_price = p
        return drafts, problems

    def _conflicts(self, task: Task, drafts: dict[str, GoldDraft]) -> list[str]:
        """How `task` contradicts the tasks accepted before it (read only: nothing is changed)."""
        reasons = []
        if task.gold_record:
            record = task.gold_record
            pid = record["product_id"]
            d = drafts.get(pid)
            if d is None:
                return []
            if d.record is not None and d.record != record:
                return [f"product {pid} is already another product record, in {d.record_where}"]
            for at, spec in d.specs:
                broken = _record_breaks(record, spec)
                if broken:
                    reasons.append(f"its record of product {pid} breaks the {', '.join(broken)} rule(s) of {at}")
            if d.shop_id is not None and record["shop_id"] and record["shop_id"] != d.shop_id:
                reasons.append(f"its record puts product {pid} in shop {record['shop_id']}, but earlier tasks need "
                               f"it in shop {d.shop_id}")
            return reasons
        ranges: dict[str, list[PriceRange]] = {}
        rules: dict[str, list[str]] = {}  # this task's price rules so far, per product
        for spec in task.reward:
            d = drafts.get(spec.product_id)
            own = ranges.setdefault(spec.product_id, [])
            if spec.price:
                own.append(spec.price_range())
                mine = " and ".join(describe_price_constraint(c) for c in spec.price)
                if _intersect((d.price_ranges if d is not None else []) + own).is_empty():
                    others = [f"{r} in another slot of this task" for r in rules.get(spec.product_id, [])]
                    others += [f"{' and '.join(describe_price_constraint(c) for c in s.price)} in {at}"
                               for at, s in (d.specs if d is not None else []) if s.price]
                    reasons.append(f"product {spec.product_id}: no price is {mine} here and {'; '.join(others)}")
                rules.setdefault(spec.product_id, []).append(mine)
            if d is not None and d.record is not None:
                broken = _record_breaks(d.record, spec)
                if broken:
                    reasons.append(f"product {spec.product_id} is the full record of {d.record_where}, which breaks "
                                   f"its {', '.join(broken)} rule(s)")
        return reasons

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
            product["description"], product["specification"] = generated_texts(product)
        return product

    def _decoy(self, gold: dict[str, Any], broken: str, mutate: Callable[[dict[str, Any]], Any],
               generated: bool) -> tuple[dict[str, Any], dict[str, Any]]:
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
        _retext(decoy, generated, mutate(decoy) or [], gold["title"])
        return decoy, {"decoy_id": pid, "gold_id": gold["product_id"], "broken": broken}

    # The changes a decoy is made of; each returns the (old, new) values it swapped, for the texts.
    def _swap_attribute(self, p: dict[str, Any], k: str, v: str) -> list[tuple[str, str]]:
        other = _other_value(self.profile.attribute_values.get(k, []), v, self.rng)
        p["attributes"][k] = [x if x != v else other for x in p["attributes"].get(k, [])]
        for o in p["sku_options"].values():
            if o.get(k) == v:
                o[k] = other
        return [(v, other)]

    def _swap_sku(self, p: dict[str, Any], k: str, v: str) -> list[tuple[str, str]]:
        other = _other_value(self.profile.sku_values.get(k, []), v, self.rng)
        for o in p["sku_options"].values():
            if o.get(k) == v:
                o[k] = other
        if v in p["attributes"].get(k, []):
            p["attributes"][k] = [x for x in p["attributes"][k] if x != v] or [other]
        return [(v, other)]

    def _move_shop(self, p: dict[str, Any], gold_shop: str) -> None:
        other = self._random_shop()
        while other == gold_shop:
            other = self._random_shop()
        p["shop_id"] = other

    def decoys_for(self, d: GoldDraft, gold: dict[str, Any], knowledge: list[str]) -> list[tuple[dict, dict]]:
        rng = self.rng
        out = []
        price_range = _intersect(d.price_ranges)
        generated = d.record is None

        # A decoy must break something: a price rule, or else a budget; never a second right answer.
        outside = _price_outside(price_range, gold["price"], rng) if d.every_task_priced else None
        if outside is not None:
            def set_price(p, outside=outside):
                p["price"] = outside
            out.append(self._decoy(gold, "price" if price_range is not None else "budget", set_price, generated))

        for k, vs in d.attributes.items():
            for v in vs:
                out.append(self._decoy(gold, f"attribute:{k}={v}",
                                       lambda p, k=k, v=v: self._swap_attribute(p, k, v), generated))
        for sku in d.sku_sets:
            for k, v in sku.items():
                out.append(self._decoy(gold, f"sku:{k}={v}", lambda p, k=k, v=v: self._swap_sku(p, k, v), generated))
        for s in sorted(d.services):
            def drop_service(p, s=s):
                p["service"] = [x for x in p["service"] if x != s]
            out.append(self._decoy(gold, f"service:{s}", drop_service, generated))
        if d.every_task_one_shop:
            out.append(self._decoy(gold, "shop", lambda p: self._move_shop(p, gold["shop_id"]), generated))
        for kw in knowledge:
            pattern = re.compile(re.escape(kw), re.IGNORECASE)
            replacement = _other_value(self.profile.title_vocabulary[:300], kw, rng)

            def drop_knowledge(p, pattern=pattern, replacement=replacement):
                p["title"] = pattern.sub(lambda _m: replacement, gold["title"])
                p["description"] = pattern.sub(lambda _m: replacement, p["description"])
                p["short_description"] = pattern.sub(lambda _m: replacement, p["short_description"])
            out.append(self._decoy(gold, f"knowledge:{kw}", drop_knowledge, generated))
        return out

    # -- no decoy is a second right answer ------------------------------------------------------------------

    @staticmethod
    def answers(decoy: dict[str, Any], gold_id: str, tasks: list[Task], golds: Mapping[str, dict[str, Any]]
                ) -> list[str]:
        """The ids of the tasks sharing `gold_id` that `decoy` would pass in its place (in each of the gold's
        slots, and in all of them), every title rule taken as met. ShoppingBench's rules are checked; the
        strict ones (`distinct_products`) accept a subset of what they accept, so they are covered too."""
        did = decoy["product_id"]

        def lookup(ids):
            return {i: decoy if i == did else golds[i] for i in ids if i == did or i in golds}

        out = []
        for task in tasks:
            ids = [s.product_id for s in task.reward]
            slots = [i for i, pid in enumerate(ids) if pid == gold_id]
            variants = [[did if i in slots else pid for i, pid in enumerate(ids)]]
            if len(slots) > 1:
                variants += [[did if i == j else pid for i, pid in enumerate(ids)] for j in slots]
            if any(score_episode(task, v, lookup, _neutral_title).success for v in variants):
                out.append(task.task_id)
        return out

    def _changes_against(self, task: Task, gold_id: str, decoy: dict[str, Any]) -> list[tuple[str, Callable]]:
        """(name, change) of each single change that could make `decoy` fail `task`."""
        out: list[tuple[str, Callable]] = []
        for spec in task.reward:
            if spec.product_id != gold_id:
                continue
            for k, v in spec.attribute_pairs():
                out.append((f"attribute:{k}={v}", lambda p, k=k, v=v: self._swap_attribute(p, k, v)))
            for k, v in spec.sku_pairs():
                out.append((f"sku:{k}={v}", lambda p, k=k, v=v: self._swap_sku(p, k, v)))
            for s in spec.service:
                out.append((f"service:{s}", lambda p, s=s: p.update(service=[x for x in p["service"] if x != s])))
            outside = _price_outside(spec.price_range(), decoy["price"], self.rng) if spec.price else None
            if outside is not None:
                out.append(("price", lambda p, outside=outside: p.update(price=outside)))
        v = task.voucher
        if v is not None:  # dear enough to break the budget even after the voucher
            off = (v.face_value or 0.0) + (v.cap or 0.0)
            dear = round(max(decoy["price"] * 2, (v.budget + off) / max(0.01, 1 - (v.discount or 0.0)) * 1.2 + 1), 2)
            out.append(("budget", lambda p, dear=dear: p.update(price=dear)))
        if task.knowledge_attribute:
            pattern = re.compile(re.escape(task.knowledge_attribute), re.IGNORECASE)
            other = _other_value(self.profile.title_vocabulary[:300], task.knowledge_attribute, self.rng)
            out.append((f"knowledge:{task.knowledge_attribute}", lambda p, pattern=pattern, other=other: p.update(
                {f: pattern.sub(lambda _m: other, p[f]) for f in ("title", "description", "short_description")})))
        if task.intent.value in ("shop", "voucher"):
            out.append(("shop", lambda p: self._move_shop(p, decoy["shop_id"])))
        return out

    def _repair(self, decoy: dict[str, Any], gold_id: str, tasks: list[Task], golds: Mapping[str, dict[str, Any]],
                generated: bool) -> tuple[dict[str, Any], list[str]] | None:
        """The decoy made to fail every task of its gold by one more change per task it passed (a change of a
        rule only the passed task carries, where there is one), or None."""
        extra: list[str] = []
        passing = self.answers(decoy, gold_id, tasks, golds)
        by_id = {t.task_id: t for t in tasks}
        while passing and len(extra) < 3:
            carried = {name for t in tasks if t.task_id not in passing
                       for name, _ in self._changes_against(t, gold_id, decoy)}
            changes = sorted(self._changes_against(by_id[passing[0]], gold_id, decoy), key=lambda c: c[0] in carried)
            for name, change in changes:
                trial = copy.deepcopy(decoy)
                _retext(trial, generated, change(trial) or [], golds[gold_id]["title"])
                now = self.answers(trial, gold_id, tasks, golds)
                if set(now) < set(passing):
                    decoy, passing = trial, now
                    extra.append(name)
                    break
            else:
                return None
        return None if passing else (decoy, extra)

    def build(self, tasks: list[Task], where: Mapping[str, str] | None = None) -> Reconstruction:
        drafts, problems = self.collect(tasks, where)
        if problems:
            at = where or {}
            why: dict[str, list[str]] = {}
            for t, reason in problems:
                why.setdefault(f"{t.task_id}: {at.get(t.task_id, t.source)}", []).append(reason)
            return Reconstruction(golds=[], decoys=[], decoy_log=[], gold_shops=set(),
                                  conflicts=[f"{task}: {'; '.join(reasons)}" for task, reasons in why.items()],
                                  bad_tasks={t.task_id for t, _ in problems})
        knowledge: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            if t.knowledge_attribute and t.gold_record:
                knowledge[t.gold_record["product_id"]].append(t.knowledge_attribute)
        golds, made = [], []
        for pid in sorted(drafts):
            gold = self.materialize(drafts[pid])
            golds.append(gold)
            made += self.decoys_for(drafts[pid], gold, knowledge.get(pid, []))
        by_id = {g["product_id"]: g for g in golds}
        tasks_of: dict[str, list[Task]] = defaultdict(list)
        for t in tasks:
            for pid in dict.fromkeys(s.product_id for s in t.reward):
                tasks_of[pid].append(t)
        decoys, log, repaired, dropped = [], [], 0, 0
        for decoy, entry in made:
            gid = entry["gold_id"]
            if self.answers(decoy, gid, tasks_of[gid], by_id):
                fixed = self._repair(decoy, gid, tasks_of[gid], by_id, drafts[gid].record is None)
                if fixed is None:
                    dropped += 1
                    continue
                decoy, entry = fixed[0], {**entry, "also": fixed[1]}
                repaired += 1
            decoys.append(decoy)
            log.append(entry)
        return Reconstruction(golds=golds, decoys=decoys, decoy_log=log, gold_shops={g["shop_id"] for g in golds},
                              conflicts=[], decoys_repaired=repaired, decoys_dropped=dropped)


def _retext(product: dict[str, Any], generated: bool, swaps: list[tuple[str, str]], gold_title: str) -> None:
    """A decoy's texts after its changes: a generated product's are generated again from its own attributes
    (after its gold's title, as before: only what the decoy changed changes); a real record's free text gets
    each swapped value replaced (as a whole word)."""
    if generated:
        product["description"], product["specification"] = generated_texts(product, gold_title)
        return
    for old, new in swaps:
        pattern = re.compile(rf"(?<!\w){re.escape(old)}(?!\w)", re.IGNORECASE)
        for f in ("description", "short_description", "specification"):
            product[f] = pattern.sub(lambda _m, new=new: new, product[f])


def reconstruct(tasks: list[Task], seed: int, n_products: int, where: Mapping[str, str] | None = None,
                skip_bad_tasks: bool = False) -> tuple[Reconstruction, CatalogueProfile, list[Task]]:
    """Golds and decoys for `tasks`, with the profile they were made from and the tasks kept. A task that
    cannot be built raises BadTasksError (every such task named with its file and line), or, with
    `skip_bad_tasks`, is left out and reported in `conflicts`; the rest is then rebuilt without it, as if it
    had never been in the file."""
    kept, skipped = list(tasks), []
    for _ in range(5):
        if not kept:
            raise BadTasksError(skipped, none_left=True)
        profile = learn_profile(kept)
        recon = GoldBuilder(profile, seed, n_products).build(kept, where)
        if not recon.bad_tasks:
            recon.conflicts = skipped
            return recon, profile, kept
        if not skip_bad_tasks:
            raise BadTasksError(recon.conflicts)
        skipped += [f"{c}; skipped" for c in recon.conflicts]
        kept = [t for t in kept if t.task_id not in recon.bad_tasks]
    raise BadTasksError(skipped + ["(still more after five rounds of leaving tasks out)"])


def fit_decoys(recon: Reconstruction, n_products: int) -> int:
    """Keep golds + decoys within `n_products`, so that the catalogue has exactly that many products: when
    they do not all fit, decoys are left out evenly (each gold's first decoys are kept first) and their
    number returned. Fewer products than golds is an error."""
    room = n_products - len(recon.golds)
    if room < 0:
        raise ValueError(f"{n_products:,} products cannot hold the {len(recon.golds):,} gold products these tasks "
                         f"need: ask for at least {len(recon.golds):,} (or {len(recon.golds) + len(recon.decoys):,} "
                         "to keep every decoy)")
    if len(recon.decoys) <= room:
        return 0
    seen: dict[str, int] = defaultdict(int)
    rank = []
    for i, entry in enumerate(recon.decoy_log):
        rank.append((seen[entry["gold_id"]], i))
        seen[entry["gold_id"]] += 1
    keep = sorted(i for _, i in sorted(rank)[:room])
    left_out = len(recon.decoys) - len(keep)
    recon.decoys = [recon.decoys[i] for i in keep]
    recon.decoy_log = [recon.decoy_log[i] for i in keep]
    return left_out
