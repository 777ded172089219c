"""ShoppingBench-format task files: load any of the four intents, recognised by record shape.

Task files are untrusted input: every size in them is bounded (the `MAX_*` limits below, checked before
any expensive work), every value is type-checked, and every error names the file and line. A task that
is well formed but cannot be built (no price meets its rules, a basket over its own budget) is named by
`unsatisfiable`; the catalogue build refuses it, or skips and reports it (`--skip-bad-tasks`).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandbox.data_model import DiscountType, Intent, VoucherType, normalize_record
from shoplab_core.errors import UserError

# Bounds on task files (the longest dev line is 4.7 kB, its longest title 253 characters, its longest query
# 989, at most 4 products a task and 11 constraints a product): generous for real tasks, and small enough
# that no input can make the build run out of memory or time.
MAX_LINE_BYTES = 1 << 20  # one task line
MAX_TASK_FILE_BYTES = 256 << 20  # all task files of one load together
MAX_TASKS = 200_000  # all task files of one load together
MAX_QUERY_CHARS = 10_000
MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 500  # an attribute or SKU key or value, a service, a knowledge attribute
MAX_ID_CHARS = 64
MAX_PRODUCTS_PER_TASK = 10
MAX_TITLES = 10  # per requested product
MAX_PRICE_RULES = 10  # per requested product
MAX_PAIRS = 100  # attribute or SKU (key, value) pairs per requested product
MAX_SERVICES = 10  # per requested product
MAX_RECORD_TEXT_CHARS = 100_000  # a full record's description and other text fields
MAX_RECORD_VALUES = 1_000  # a full record's SKU options, or its attribute values
MAX_PRICE = 1e9  # any price, price bound or voucher amount
MAX_SOLD_COUNT = 10**12
_ID = re.compile(r"[^\s,]+")  # a recommendation is ids split at ","


# ShoppingBench's public dev tasks (Apache-2.0), committed under data/shoppingbench/: the default of
# `shoplab sandbox build --tasks` (what `make run` builds from).
BUNDLED_TASK_DIR = Path(__file__).resolve().parent.parent / "data" / "shoppingbench"


def bundled_task_files() -> list[Path]:
    files = sorted(BUNDLED_TASK_DIR.glob("*.jsonl"))
    if not files:
        raise TaskFormatError(f"no task files in {BUNDLED_TASK_DIR} (an installed copy without the repo's data/): "
                              "give --tasks FILE.jsonl ...")
    return files


class TaskFormatError(UserError, ValueError):
    """A task line that is not in ShoppingBench's format; the message names file and line."""


class BadTasksError(TaskFormatError):
    """Well-formed tasks that cannot be built (unsatisfiable, or contradicting an earlier task); the message
    names each one's file and line."""

    def __init__(self, problems: list[str], none_left: bool = False):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        head = ("no task can be built, so there is nothing to build" if none_left else
                f"{len(problems)} task(s) cannot be built (--skip-bad-tasks builds without them)")
        super().__init__(f"{head}:\n{shown}{more}")


def _short(value: Any, limit: int = 60) -> str:
    """A value for an error message, never the whole of a huge one."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _text(value: Any, what: str, limit: int, numbers: bool = False, blank: bool = False) -> str:
    """A string field (or, with `numbers`, a number written as text), at most `limit` long, non-blank unless
    `blank`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float) or (
            not numbers and not isinstance(value, str)):
        raise ValueError(f"{what} must be {'text or a number' if numbers else 'text'}, not {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value}")
    text = value if isinstance(value, str) else str(value)
    if not blank and not text.strip():
        raise ValueError(f"{what} is blank")
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit:,} characters ({len(text):,})")
    return text


def _product_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a product id must be text or an integer, not {_short(value)}")
    pid = str(value)
    if len(pid) > MAX_ID_CHARS or not _ID.fullmatch(pid):
        raise ValueError(f"a product id is at most {MAX_ID_CHARS} characters without spaces or commas "
                         f"(a recommendation is ids split at ','), not {_short(pid)}")
    return pid


def _price_number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, not {_short(value)}") from None
    if not math.isfinite(number) or not 0 <= number <= MAX_PRICE:
        raise ValueError(f"{what} must be a number from 0 to {MAX_PRICE:,.0f}, not {_short(value)}")
    return number


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

    def cents(self) -> tuple[int, int | None]:
        """The whole-cent prices inside, from 1 cent up: (lowest, highest or None); empty when lowest > highest."""
        low = max(1, math.ceil(round((self.low or 0.0) * 100, 6)))
        return low, None if self.high is None else math.floor(round(self.high * 100, 6))

    def is_empty(self) -> bool:
        low, high = self.cents()
        return high is not None and low > high


PRICE_MODES = ("less than", "greater than", "between")


def parse_price_constraint(constraint: dict[str, Any]) -> PriceRange:
    """`{"less than": [null, 100]}`, `{"greater than": [35, null]}`, `{"between": [11, 206]}`.

    Bounds are numbers from 0 to MAX_PRICE; a reversed "between" is read as written (an empty range,
    which `unsatisfiable` reports)."""
    if not isinstance(constraint, dict) or len(constraint) != 1:
        raise TaskFormatError(f"price constraint must be a one-key object, got {_short(constraint)}")
    mode, bounds = next(iter(constraint.items()))
    if mode not in PRICE_MODES:
        raise TaskFormatError(f"unknown price mode {_short(mode)} (expected 'less than', 'greater than' or 'between')")
    if not isinstance(bounds, list | tuple):
        bounds = [bounds, bounds] if mode == "between" else ([None, bounds] if mode == "less than" else [bounds, None])
    if len(bounds) > 2:
        raise TaskFormatError(f"a price constraint has at most two bounds, got {_short(bounds)}")
    bounds = list(bounds) + [None] * (2 - len(bounds))
    low, high = (None if b is None else _price_number(b, f"a {mode!r} price bound") for b in bounds)
    if mode == "less than":
        high = high if high is not None else low
        if high is None:
            raise TaskFormatError("a 'less than' price constraint needs a bound")
        return PriceRange(low=None, high=high)
    if mode == "greater than":
        low = low if low is not None else high
        if low is None:
            raise TaskFormatError("a 'greater than' price constraint needs a bound")
        return PriceRange(low=low, high=None)
    if low is None and high is None:
        raise TaskFormatError("a 'between' price constraint needs a bound")
    return PriceRange(low=low, high=high)


def describe_price_constraint(constraint: dict[str, Any]) -> str:
    r = parse_price_constraint(constraint)
    mode = next(iter(constraint))
    if mode == "between":
        return f"between {r.low if r.low is not None else 0:g} and {r.high if r.high is not None else math.inf:g}"
    return f"at most {r.high:g}" if mode == "less than" else f"at least {r.low:g}"


def _scalar_text(value: Any, what: str) -> str:
    """An attribute or SKU key or value: text or a number, bounded (blank is allowed: real records have it)."""
    return _text(value, what, MAX_TEXT_CHARS, numbers=True, blank=True)


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
        return _product_id(v)

    @field_validator("title", mode="before")
    @classmethod
    def _titles(cls, v: Any) -> list[str]:
        titles = [v] if isinstance(v, str) else v
        if not isinstance(titles, list) or not titles:
            raise ValueError(f"title must be text or a non-empty list of texts, not {_short(v)}")
        if len(titles) > MAX_TITLES:
            raise ValueError(f"at most {MAX_TITLES} titles, got {len(titles):,}")
        return [_text(t, "a title", MAX_TITLE_CHARS) for t in titles]

    @field_validator("price", mode="before")
    @classmethod
    def _prices(cls, v: Any) -> Any:
        rules = [v] if isinstance(v, dict) else v
        if rules is None:
            return []
        if not isinstance(rules, list):
            raise ValueError(f"price must be a list of price constraints, not {_short(v)}")
        if len(rules) > MAX_PRICE_RULES:
            raise ValueError(f"at most {MAX_PRICE_RULES} price constraints a product, got {len(rules):,}")
        for rule in rules:
            parse_price_constraint(rule)
        return rules

    @field_validator("attributes", mode="before")
    @classmethod
    def _attrs(cls, v: Any) -> Any:
        groups = [{k: vals} for k, vals in v.items()] if isinstance(v, dict) else v or []
        if not isinstance(groups, list) or not all(isinstance(a, dict) for a in groups):
            raise ValueError(f"attributes must be an object or a list of objects, not {_short(v)}")
        out = [{_scalar_text(k, "an attribute key"): [_scalar_text(x, "an attribute value")
                                                         for x in (vals if isinstance(vals, list) else [vals])]
                for k, vals in a.items()} for a in groups[:MAX_PAIRS + 1]]
        if sum(len(vals) for a in out for vals in a.values()) > MAX_PAIRS:
            raise ValueError(f"at most {MAX_PAIRS} attribute values a product")
        return out

    @field_validator("sku_options", mode="before")
    @classmethod
    def _skus(cls, v: Any) -> Any:
        options = [v] if isinstance(v, dict) else v or []
        if not isinstance(options, list) or not all(isinstance(o, dict) for o in options):
            raise ValueError(f"sku_options must be an object or a list of objects, not {_short(v)}")
        if sum(len(o) for o in options) > MAX_PAIRS:
            raise ValueError(f"at most {MAX_PAIRS} SKU pairs a product")
        return [{_scalar_text(k, "a SKU key"): _scalar_text(x, "a SKU value") for k, x in o.items()} for o in options]

    @field_validator("service", mode="before")
    @classmethod
    def _services(cls, v: Any) -> Any:
        services = [v] if isinstance(v, str) else v or []
        if not isinstance(services, list):
            raise ValueError(f"service must be text or a list of texts, not {_short(v)}")
        if len(services) > MAX_SERVICES:
            raise ValueError(f"at most {MAX_SERVICES} services a product, got {len(services):,}")
        return [_text(x, "a service", MAX_TEXT_CHARS) for x in services]

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
    threshold: float = Field(ge=0, le=MAX_PRICE)
    discount_type: DiscountType
    face_value: float | None = Field(None, ge=0, le=MAX_PRICE)
    discount: float | None = Field(None, gt=0, le=1, description="A percentage voucher's rate, e.g. 0.2")
    cap: float | None = Field(None, ge=0, le=MAX_PRICE)
    price_after_voucher: float | None = Field(None, ge=0, le=MAX_PRICE)
    budget: float = Field(gt=0, le=MAX_PRICE)


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


def _validation_message(exc: ValidationError, prefix: str) -> str:
    """pydantic's errors, short: `reward[0].title: a title is blank` (never the whole input)."""
    parts = []
    for e in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = "" if e["type"].startswith("value_error") or "input" not in e else f" (got {_short(e['input'])})"
        parts.append(f"{prefix}{'.' if prefix and loc else ''}{loc}: {msg}{got}")
    return "; ".join(parts)


def _full_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A knowledge task's gold product as the catalogue stores it, every size and number bounded."""
    if "product_id" not in raw:
        raise TaskFormatError("a knowledge task's reward has no product_id")
    _product_id(raw["product_id"])
    for key in ("sku_options", "attributes"):
        value = raw.get(key)
        if isinstance(value, list | dict) and len(value) > MAX_RECORD_VALUES:
            raise TaskFormatError(f"a knowledge task's record has more than {MAX_RECORD_VALUES:,} {key}")
    options = raw.get("sku_options")
    if not (options is None or isinstance(options, str)
            or (isinstance(options, dict | list) and all(o is None or isinstance(o, dict)
                                                         for o in (options.values() if isinstance(options, dict)
                                                                   else options)))):
        raise TaskFormatError(f"the record's sku_options must be an object or a list of objects (one per "
                              f"variant), not {_short(options)}")
    if not (raw.get("attributes") is None or isinstance(raw["attributes"], dict | str)):
        raise TaskFormatError(f"the record's attributes must be an object, not {_short(raw['attributes'])}")
    if _price_number(raw.get("price"), "the record's price") <= 0:
        raise TaskFormatError("the record's price must be above 0")
    try:
        record = normalize_record(raw)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        message = _validation_message(exc, "reward") if isinstance(exc, ValidationError) else _clip(str(exc), 200)
        raise TaskFormatError(f"a knowledge task's reward is not a readable product record: {message}") from None
    _text(record["title"], "the record's title", MAX_TITLE_CHARS)
    for key, value in record.items():
        if isinstance(value, str) and len(value) > MAX_RECORD_TEXT_CHARS:
            raise TaskFormatError(f"the record's {key} is longer than {MAX_RECORD_TEXT_CHARS:,} characters")
    _price_number(record["price"], "the record's price")
    if not 0 <= record["sold_count"] <= MAX_SOLD_COUNT:
        raise TaskFormatError(f"the record's sold_count must be from 0 to {MAX_SOLD_COUNT:,}")
    if sum(len(v) for v in record["attributes"].values()) > MAX_RECORD_VALUES:
        raise TaskFormatError(f"a knowledge task's record has more than {MAX_RECORD_VALUES:,} attribute values")
    texts = [*record["service"], *record["attributes"], *(v for vs in record["attributes"].values() for v in vs),
             *(x for o in record["sku_options"].values() for kv in o.items() for x in kv)]
    if len(record["service"]) > MAX_SERVICES or any(len(t) > MAX_TEXT_CHARS for t in texts):
        raise TaskFormatError(f"the record's services, attributes and SKU options are at most {MAX_TEXT_CHARS} "
                              f"characters each ({MAX_SERVICES} services)")
    return record


def parse_task(record: dict[str, Any], source: str = "") -> Task:
    if not isinstance(record, dict) or "query" not in record or "reward" not in record:
        raise TaskFormatError("a task needs at least 'query' and 'reward'")
    intent = detect_intent(record)
    try:
        query = _text(record["query"], "the query", MAX_QUERY_CHARS)
    except ValueError as exc:
        raise TaskFormatError(str(exc)) from None
    raw_reward = record["reward"]
    gold_record = None
    knowledge = None
    if intent == Intent.web:
        if not isinstance(raw_reward, dict) or "title" not in raw_reward:
            raise TaskFormatError("a knowledge task's reward must be a full product record")
        gold_record = _full_record(raw_reward)
        try:
            knowledge = _text(record.get("Knowledge_Attribute", record.get("knowledge_attribute")),
                              "the Knowledge_Attribute", MAX_TEXT_CHARS, numbers=True)
        except ValueError as exc:
            raise TaskFormatError(str(exc)) from None
        specs = [ProductSpec(product_id=gold_record["product_id"], title=[str(gold_record["title"])])]
    else:
        entries = raw_reward if isinstance(raw_reward, list) else [raw_reward]
        if not entries:
            raise TaskFormatError("reward lists no product")
        if len(entries) > MAX_PRODUCTS_PER_TASK:
            raise TaskFormatError(f"at most {MAX_PRODUCTS_PER_TASK} products a task, got {len(entries):,}")
        specs = []
        for i, entry in enumerate(entries):
            where = "reward" if isinstance(raw_reward, dict) else f"reward[{i}]"
            if not isinstance(entry, dict):
                raise TaskFormatError(f"{where} must be an object, not {_short(entry)}")
            try:
                specs.append(ProductSpec.model_validate(entry))
            except ValidationError as exc:
                raise TaskFormatError(_validation_message(exc, where)) from None
    try:
        voucher = TaskVoucher.model_validate(record["voucher"]) if record.get("voucher") else None
    except ValidationError as exc:
        raise TaskFormatError(_validation_message(exc, "voucher")) from None
    return Task(task_id=task_id_for(intent, query), intent=intent, query=query, reward=specs, voucher=voucher,
                knowledge_attribute=knowledge, gold_record=gold_record, source=source)


def unsatisfiable(task: Task) -> list[str]:
    """Why no product could meet this well-formed task whatever the catalogue: [] when something could."""
    problems = []
    for spec in task.reward:
        if spec.price and spec.price_range().is_empty():
            rules = " and ".join(describe_price_constraint(c) for c in spec.price)
            problems.append(f"product {spec.product_id}: no price (in whole cents, above 0) is {rules}")
        wanted: dict[str, str] = {}
        for key, value in spec.sku_pairs():
            if wanted.setdefault(key, value) != value:
                problems.append(f"product {spec.product_id}: one SKU variant cannot have {key} both "
                                f"{_short(wanted[key])} and {_short(value)}")
    v = task.voucher
    if v is not None and v.price_after_voucher is not None and v.price_after_voucher > v.budget + 0.005:
        problems.append(f"the gold basket costs {v.price_after_voucher:g} after the voucher, over the budget {v.budget:g}")
    return problems


class LocatedTask(NamedTuple):
    task: Task
    where: str  # "path:line"


def iter_task_file(path: str | Path, budget: list[int] | None = None) -> Iterator[LocatedTask]:
    """The tasks of one file with their lines, read in bounded pieces: a line over MAX_LINE_BYTES, text that
    is not UTF-8, or anything else out of format stops with a TaskFormatError naming file and line.
    `budget` is [bytes, tasks] left for a load of several files (MAX_TASK_FILE_BYTES, MAX_TASKS)."""
    path = Path(path)
    budget = budget if budget is not None else [MAX_TASK_FILE_BYTES, MAX_TASKS]
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing" if not path.exists() else "not a regular file"
        raise TaskFormatError(f"{path}: {what}; give task files (JSONL), e.g. data/shoppingbench/*.jsonl")
    if path.stat().st_size > budget[0]:
        raise TaskFormatError(f"{path}: task files hold at most {MAX_TASK_FILE_BYTES >> 20} MB in all "
                              f"({path.stat().st_size:,} bytes here)")
    with path.open("rb") as fh:
        lineno = 0
        while raw := fh.readline(MAX_LINE_BYTES + 2):
            lineno += 1
            budget[0] -= len(raw)
            where = f"{path}:{lineno}"
            if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                raise TaskFormatError(f"{where}: the line is longer than {MAX_LINE_BYTES:,} bytes (the limit of a task)")
            if budget[0] < 0:
                raise TaskFormatError(f"{where}: task files hold at most {MAX_TASK_FILE_BYTES >> 20} MB in all")
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TaskFormatError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                      "of the line); save the file as UTF-8") from None
            if not line.strip():
                continue
            budget[1] -= 1
            if budget[1] < 0:
                raise TaskFormatError(f"{where}: task files hold at most {MAX_TASKS:,} tasks in all")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"{where}: not a JSON object: {exc}") from None
            except RecursionError:
                raise TaskFormatError(f"{where}: JSON nested too deeply") from None
            try:
                yield LocatedTask(parse_task(record, source=path.name), where)
            except (TaskFormatError, ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
                raise TaskFormatError(f"{where}: {_clip(str(exc))}") from exc


def load_task_file(path: str | Path, allow_empty: bool = True) -> list[Task]:
    """Every task of one file, in order (repeated queries too)."""
    tasks = [t.task for t in iter_task_file(path)]
    if not tasks and not allow_empty:
        raise TaskFormatError(f"{path}: no task in this file (it is empty or blank)")
    return tasks


def load_located_tasks(paths: Iterable[str | Path], allow_empty: bool = True) -> list[LocatedTask]:
    """Tasks from several files, each with its file and line; a query that appears twice keeps its first
    occurrence. Without `allow_empty`, a file without a task (empty or blank) is an error."""
    seen: set[str] = set()
    tasks: list[LocatedTask] = []
    budget = [MAX_TASK_FILE_BYTES, MAX_TASKS]
    for p in paths:
        n = 0
        for located in iter_task_file(p, budget):
            n += 1
            if located.task.task_id not in seen:
                seen.add(located.task.task_id)
                tasks.append(located)
        if not n and not allow_empty:
            raise TaskFormatError(f"{p}: no task in this file (it is empty or blank)")
    return tasks


def load_tasks(paths: Iterable[str | Path], allow_empty: bool = True) -> list[Task]:
    """Tasks from several files; a query that appears twice keeps its first occurrence."""
    return [t.task for t in load_located_tasks(paths, allow_empty=allow_empty)]


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
