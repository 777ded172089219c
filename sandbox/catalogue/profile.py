"""What the filler generator learns from real records: vocabularies and distributions.

Every real record counts: the full product records of knowledge tasks and the partial ones in
the other intents' rewards (titles, attribute and SKU vocabularies, price constraints, services).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.data_model import SERVICES
from sandbox.engines.base import analyze
from sandbox.tasks import Task

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'+\-./]*")


@dataclass
class RecordCluster:
    """One real record seen as a seed for look-alike products."""

    title_words: list[str]
    category: str
    attribute_keys: list[str]
    sku_keys: list[str]
    log_price: float


@dataclass
class CatalogueProfile:
    clusters: list[RecordCluster] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)
    attribute_values: dict[str, list[str]] = field(default_factory=dict)
    sku_values: dict[str, list[str]] = field(default_factory=dict)
    title_vocabulary: list[str] = field(default_factory=list)
    service_rates: dict[str, float] = field(default_factory=dict)
    log_price_sigma: float = 0.6
    sold_counts: list[int] = field(default_factory=list)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), ensure_ascii=False))

    @classmethod
    def from_json(cls, path: str | Path) -> CatalogueProfile:
        raw = json.loads(Path(path).read_text())
        raw["clusters"] = [RecordCluster(**c) for c in raw["clusters"]]
        return cls(**raw)


def _spec_log_price(task: Task, spec_index: int) -> float | None:
    spec = task.reward[spec_index]
    r = spec.price_range()
    if r is None:
        return None
    if r.low is not None and r.high is not None:
        return math.log(max(1.0, (max(r.low, 1.0) * max(r.high, 1.0)) ** 0.5))
    if r.low is not None:
        return math.log(max(1.0, r.low * 1.5))
    return math.log(max(1.0, (r.high or 2.0) * 0.6))


def nearest_category(words: list[str], category_index: list[tuple[set[str], str]]) -> str:
    tokens = set(analyze(" ".join(words)))
    best, best_score = "Others", 0.0
    for cat_tokens, cat in category_index:
        inter = len(tokens & cat_tokens)
        if inter == 0:
            continue
        score = inter / math.sqrt(len(tokens) * len(cat_tokens))
        if score > best_score:
            best, best_score = cat, score
    return best if best_score >= 0.15 else "Others"


def learn_profile(tasks: list[Task]) -> CatalogueProfile:
    full_records = [t.gold_record for t in tasks if t.gold_record]
    attr_values: dict[str, Counter[str]] = defaultdict(Counter)
    sku_values: dict[str, Counter[str]] = defaultdict(Counter)
    title_vocab: Counter[str] = Counter()
    brands: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    log_prices: list[float] = []
    service_counts: Counter[str] = Counter()
    sold: list[int] = []

    category_index: list[tuple[set[str], str]] = []
    for rec in full_records:
        cat = str(rec.get("category") or "Others")
        categories[cat] += 1
        category_index.append((set(analyze(str(rec.get("title", "")) + " " + cat.split(">")[-1])), cat))
        if rec.get("brand"):
            brands[str(rec["brand"])] += 1
        for k, vs in (rec.get("attributes") or {}).items():
            for v in vs if isinstance(vs, list) else [vs]:
                attr_values[str(k)][str(v)] += 1
        for option in (rec.get("sku_options") or {}).values():
            for k, v in (option or {}).items():
                sku_values[str(k)][str(v)] += 1
        for s in rec.get("service") or []:
            service_counts[s] += 1
        try:
            log_prices.append(math.log(max(1.0, float(rec.get("price") or 1.0))))
        except (TypeError, ValueError):
            pass
        try:
            sold.append(int(rec.get("sold_count") or 0))
        except (TypeError, ValueError):
            pass

    clusters: list[RecordCluster] = []
    for task in tasks:
        for i, spec in enumerate(task.reward):
            for k, v in spec.attribute_pairs():
                attr_values[k][v] += 1
                if k == "brand":
                    brands[v] += 1
            for k, v in spec.sku_pairs():
                sku_values[k][v] += 1
            words = _WORD.findall(spec.title[0]) if spec.title else []
            title_vocab.update(w for w in words if len(w) > 1)
            if task.gold_record:
                rec = task.gold_record
                cat = str(rec.get("category") or "Others")
                lp = math.log(max(1.0, float(rec.get("price") or 1.0)))
                akeys = list((rec.get("attributes") or {}).keys())
                skeys = sorted({k for o in (rec.get("sku_options") or {}).values() for k in (o or {})})
            else:
                cat = nearest_category(words, category_index) if category_index else "Others"
                lp = _spec_log_price(task, i)
                akeys = [k for k, _ in spec.attribute_pairs()]
                skeys = [k for k, _ in spec.sku_pairs()]
            if lp is not None:
                log_prices.append(lp)
            clusters.append(RecordCluster(title_words=words, category=cat, attribute_keys=akeys, sku_keys=skeys,
                                          log_price=lp if lp is not None else float("nan")))
            categories[cat] += 0

    mean_lp = sum(log_prices) / len(log_prices) if log_prices else math.log(300.0)
    var = sum((x - mean_lp) ** 2 for x in log_prices) / max(1, len(log_prices) - 1) if log_prices else 1.0
    for c in clusters:
        if math.isnan(c.log_price):
            c.log_price = mean_lp
    n_full = max(1, len(full_records))
    rates = {s: service_counts[s] / n_full for s in SERVICES} if full_records else dict.fromkeys(SERVICES, 0.3)
    return CatalogueProfile(
        clusters=clusters,
        categories=sorted(categories) or ["Others"],
        brands=[b for b, _ in brands.most_common()] or ["OEM"],
        attribute_values={k: [v for v, _ in c.most_common()] for k, c in attr_values.items()},
        sku_values={k: [v for v, _ in c.most_common()] for k, c in sku_values.items()},
        title_vocabulary=[w for w, _ in title_vocab.most_common()],
        service_rates=rates,
        # Within one seed record, prices spread less than across the whole catalogue.
        log_price_sigma=min(0.8, max(0.3, math.sqrt(var) / 2)),
        sold_counts=sorted(sold) or [0, 1, 3, 10, 50],
    )


def profile_summary(profile: CatalogueProfile) -> dict[str, Any]:
    return {
        "seed_records": len(profile.clusters),
        "categories": len(profile.categories),
        "brands": len(profile.brands),
        "attribute_keys": len(profile.attribute_values),
        "sku_keys": len(profile.sku_values),
        "title_vocabulary": len(profile.title_vocabulary),
        "service_rates": {k: round(v, 3) for k, v in profile.service_rates.items()},
        "log_price_sigma": round(profile.log_price_sigma, 3),
    }
