"""ShoppingBench-format task files: load any of the four intents, recognised by record shape."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandbox.data_model import DiscountType, Intent, VoucherType, normalize_record


class TaskFormatError(ValueError):
    """A task line that is not in ShoppingBench's format; the message names file and line."""


class PriceRange(BaseModel):
    """An inclusive price interval; either side may be open."""

    low: float | None = None
    high: float | None = None

    def contains(self, price: float) -> bool:
        return (self.low is None or price >= self.low) and (self.high is None or price <= self.high)

    def as_filter(self) -> str:
        low = "" if self.low is None else f"{self.low:g}"
        high = "" if self.high is None else f"{self.high:g}"
        return f"{low}-{high}"


def parse_price_constraint(constraint: dict[str, Any]) -> PriceRange:
    """`{"less than": [null, 100]}`, `{"greater than": [35, null]}`, `{"between": [11, 206]}`."""
    if not isinstance(constraint, dict) or len(constraint) != 1:
        raise TaskFormatError(f"price constraint must be a one-key object, got {constraint!r}")
    mode, bounds = next(iter(constraint.items()))
    if not isinstance(bounds, list | tuple):
        bounds = [bounds, bounds] if mode == "between" else ([None, bounds] if mode == "less than" else [bounds, None])
    bounds = list(bounds) + [None] * (2 - len(bounds))
    low, high = (None if b is None else float(b) for b in bounds[:2])
    if mode == "less than":
        return PriceRange(low=None, high=high if high is not None else low)
    if mode == "greater than":
        return PriceRange(low=low if low is not None else high, high=None)
    if mode == "between":
        return PriceRange(low=low, high=high)
    raise TaskFormatError(f"unknown price mode {mode!r} (expected 'less than', 'greater than' or 'between')")


class ProductSpec(BaseModel):
    """What one requested product must satisfy (a task's `reward` entry)."""

    product_id: str
    title: list[str]
    price: list[dict[str, Any]] = Field(default_factory=list)
    attributes: list[dict[str, list[str]]] = Field(default_factory=list)
    sku_options: list[dict[str, str]] = Field(default_factory=list)
    service: list[str] = Field(default_factory=list)

    @field_validator("product_id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> str:
        return str(v)

    @field_validator("title", mode="before")
    @classmethod
    def _titles(cls, v: Any) -> list[str]:
        return [v] if isinstance(v, str) else [str(t) for t in v]

    @field_validator("attributes", mode="before")
    @classmethod
    def _attrs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = [{k: vals} for k, vals in v.items()]
        return [{str(k): [str(x) for x in (vals if isinstance(vals, list) else [vals])] for k, vals in a.items()} for a in v or []]

    @field_validator("sku_options", mode="before")
    @classmethod
    def _skus(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = [v]
        return [{str(k): str(x) for k, x in o.items()} for o in v or []]

    @field_validator("service", mode="before")
    @classmethod
    def _services(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else list(v or [])

    def price_range(self) -> PriceRange | None:
        """The intersection of all price constraints, or None when price is free."""
        if not self.price:
            return None
        low, high = -math.inf, math.inf
        for c in self.price:
            r = parse_price_constraint(c)
            low = max(low, r.low if r.low is not None else -math.inf)
            high = min(high, r.high if r.high is not None else math.inf)
        return PriceRange(low=None if low == -math.inf else low, high=None if high == math.inf else high)

    def attribute_pairs(self) -> list[tuple[str, str]]:
        return [(k, v) for a in self.attributes for k, vs in a.items() for v in vs]

    def sku_pairs(self) -> list[tuple[str, str]]:
        return [(k, v) for o in self.sku_options for k, v in o.items()]

    def n_constraints(self) -> int:
        return len(self.title) + len(self.price) + len(self.service) + len(self.attribute_pairs()) + len(self.sku_pairs())


class TaskVoucher(BaseModel):
    """A voucher task's voucher and budget. Values that would break pricing are refused at load time
    (an unknown type once crashed `sandbox serve` at start; `discount: 5.0` made a gold's price NaN)."""

    model_config = ConfigDict(allow_inf_nan=False)

    voucher_type: VoucherType
    threshold: float = Field(ge=0)
    discount_type: DiscountType
    face_value: float | None = Field(None, ge=0)
    discount: float | None = Field(None, gt=0, le=1, description="A percentage voucher's rate, e.g. 0.2")
    cap: float | None = Field(None, ge=0)
    price_after_voucher: float | None = None
    budget: float = Field(gt=0)


class Task(BaseModel):
    task_id: str
    intent: Intent
    query: str
    reward: list[ProductSpec]
    voucher: TaskVoucher | None = None
    knowledge_attribute: str | None = None
    gold_record: dict[str, Any] | None = None
    source: str = ""

    @property
    def n_products(self) -> int:
        return len(self.reward)

    def to_shoppingbench(self) -> dict[str, Any]:
        """The task back in ShoppingBench's own line format."""
        if self.intent == Intent.web:
            out: dict[str, Any] = {"query": self.query, "Knowledge_Attribute": self.knowledge_attribute,
                                   "reward": self.gold_record}
            return out
        specs = [s.model_dump(exclude_defaults=True) for s in self.reward]
        out = {"query": self.query, "reward": specs[0] if self.intent == Intent.product else specs}
        if self.voucher is not None:
            out["voucher"] = self.voucher.model_dump()
        return out


def detect_intent(record: dict[str, Any]) -> Intent:
    """ShoppingBench's four intents differ in shape, not in a field naming them."""
    if "Knowledge_Attribute" in record or "knowledge_attribute" in record:
        return Intent.web
    if record.get("voucher"):
        return Intent.voucher
    if isinstance(record.get("reward"), list):
        return Intent.shop
    return Intent.product


def task_id_for(intent: Intent, query: str) -> str:
    return f"{intent.value}-{hashlib.sha1(query.encode('utf-8')).hexdigest()[:12]}"


def parse_task(record: dict[str, Any], source: str = "") -> Task:
    if not isinstance(record, dict) or "query" not in record or "reward" not in record:
        raise TaskFormatError("a task needs at least 'query' and 'reward'")
    intent = detect_intent(record)
    query = str(record["query"])
    raw_reward = record["reward"]
    gold_record = None
    knowledge = None
    if intent == Intent.web:
        if not isinstance(raw_reward, dict) or "title" not in raw_reward:
            raise TaskFormatError("a knowledge task's reward must be a full product record")
        try:
            gold_record = normalize_record(raw_reward)
        except ValueError as exc:
            raise TaskFormatError(f"a knowledge task's reward is not a readable product record: {exc}") from exc
        knowledge = str(record.get("Knowledge_Attribute", record.get("knowledge_attribute")))
        specs = [ProductSpec(product_id=gold_record["product_id"], title=[str(gold_record["title"])])]
    else:
        entries = raw_reward if isinstance(raw_reward, list) else [raw_reward]
        if not entries:
            raise TaskFormatError("reward lists no product")
        specs = [ProductSpec.model_validate(e) for e in entries]
        for spec in specs:
            spec.price_range()  # fail early on an unreadable price constraint
    try:
        voucher = TaskVoucher.model_validate(record["voucher"]) if record.get("voucher") else None
    except ValidationError as exc:
        problems = "; ".join(f"voucher.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors()[:3])
        raise TaskFormatError(problems) from None
    return Task(task_id=task_id_for(intent, query), intent=intent, query=query, reward=specs, voucher=voucher,
                knowledge_attribute=knowledge, gold_record=gold_record, source=source)


def load_task_file(path: str | Path) -> list[Task]:
    path = Path(path)
    tasks: list[Task] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                tasks.append(parse_task(json.loads(line), source=path.name))
            except (json.JSONDecodeError, TaskFormatError, ValueError) as exc:
                raise TaskFormatError(f"{path}:{lineno}: {exc}") from exc
    return tasks


def load_tasks(paths: Iterable[str | Path]) -> list[Task]:
    """Tasks from several files; a query that appears twice keeps its first occurrence."""
    seen: set[str] = set()
    tasks: list[Task] = []
    for p in paths:
        for t in load_task_file(p):
            if t.task_id not in seen:
                seen.add(t.task_id)
                tasks.append(t)
    return tasks


def first_per_intent(tasks: Iterable[Task], limit: int) -> list[Task]:
    """The first `limit` tasks of each intent, in order: a small run still covers every intent."""
    seen: dict[str, int] = {}
    kept = []
    for t in tasks:
        if seen.get(t.intent.value, 0) < limit:
            seen[t.intent.value] = seen.get(t.intent.value, 0) + 1
            kept.append(t)
    return kept


def write_tasks(tasks: Iterable[Task], path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(t.model_dump_json() + "\n")


def read_tasks(path: str | Path) -> list[Task]:
    with Path(path).open(encoding="utf-8") as fh:
        return [Task.model_validate_json(line) for line in fh if line.strip()]
