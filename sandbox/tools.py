"""The sandbox's own toolkits, each tool declared once as a `@tool` method (see `sandbox.toolkit`).

- `ShoppingBenchTools`: ShoppingBench's tools (`find_product`, `view_product_information`,
  `recommend_product`, `terminate`) under the `shoplab` profile (`sandbox.shoppingbench_profile` has
  them as upstream serves them).
- `UtilityTools`: a safe `calculate` (group `utility`).
- `CartTools`: a cart (`add_to_cart`, `view_cart`, `remove_from_cart`) over the episode's `Cart`,
  which owns voucher pricing.

Arguments that need validators of their own are `ToolArgs` models here; their field descriptions
and the methods' docstrings are what the LLM reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from sandbox.calculator import CalculationError, calculate
from sandbox.data_model import DETAIL_FIELDS, SEARCH_HIT_FIELDS, SERVICES, Voucher
from sandbox.engines.base import SearchRequest, SortOrder, query_terms
from sandbox.toolkit import (
    Episode,
    ErrorKind,
    ToolArgs,
    ToolError,
    Toolkit,
    ToolOutput,
    ToolSpec,
    collect_tools,
    select_tools,
    tool,
)

MAX_QUERY_CHARS = 500
MAX_PAGE = 5
MAX_VIEW_IDS = 20
MAX_PRICE_CHARS = 40
_PRICE = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*-\s*(\d+(?:\.\d+)?)?\s*$")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


def _split_ids(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        ids = [str(v).strip() for v in value]
    elif isinstance(value, int | str):
        ids = [p.strip() for p in str(value).split(",")]
    else:
        raise ValueError("product_ids must be a comma-separated string of product ids")
    ids = [i for i in ids if i]
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise ValueError(f"not a product id: {bad[0][:60]!r}")
    return ids


def parse_price_filter(value: str) -> tuple[float | None, float | None]:
    """"0-100", "100-1000", "1000-", "-50" or a single "250" (exactly that price)."""
    text = value.strip()
    if len(text) > MAX_PRICE_CHARS:  # before the regex: its optional blanks backtrack on long input
        raise ValueError(f"price must look like '100-500', '100-' or '-500', got {value[:40]!r}")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text), float(text)
    m = _PRICE.match(text)
    if not m or (m.group(1) is None and m.group(2) is None):
        raise ValueError(f"price must look like '100-500', '100-' or '-500', got {value[:40]!r}")
    low = float(m.group(1)) if m.group(1) is not None else None
    high = float(m.group(2)) if m.group(2) is not None else None
    if low is not None and high is not None and low > high:
        raise ValueError(f"price range {value!r} has its lower bound above its upper bound")
    return low, high


def check_query_text(v: str, field: str, hint: str = "") -> str:
    """Query text from a model: not blank, at most MAX_QUERY_CHARS (for every tool that takes one)."""
    if not v.strip():
        raise ValueError(f"{field} must not be empty")
    if len(v) > MAX_QUERY_CHARS:
        raise ValueError(f"{field} is {len(v)} characters long; at most {MAX_QUERY_CHARS}{hint}")
    return v


class FindProductArgs(ToolArgs):
    q: str = Field(description='The query used to search for products, e.g. "nike shoes", "backpack for college student".')
    page: int = Field(1, description="Result page, 1 to 5, 10 products per page.")
    shop_id: str | None = Field(None, description="Only search within this shop.")
    price: str | None = Field(None, description='Price range, e.g. "0-100", "100-1000", "1000-".')
    sort: Literal["default", "priceasc", "pricedesc", "order"] = Field(
        "default", description="default: relevance; priceasc / pricedesc: by price; order: by sales volume.")
    service: str | None = Field(None, description="Comma-separated: official (LazMall), freeShipping, COD, "
                                                  "flashsale (LazFlash). Products must offer all of them.")

    @field_validator("q")
    @classmethod
    def _q(cls, v: str) -> str:
        return check_query_text(v, "q", ": use a few key words")

    @field_validator("page", mode="before")
    @classmethod
    def _page_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, float) and not v.is_integer():
            raise ValueError("page must be an integer")
        return v

    @field_validator("page")
    @classmethod
    def _page(cls, v: int) -> int:
        if not 1 <= v <= MAX_PAGE:
            raise ValueError(f"page must be between 1 and {MAX_PAGE}")
        return v

    @field_validator("shop_id", mode="before")
    @classmethod
    def _shop(cls, v: Any) -> str | None:
        if v is None or str(v).strip() in ("", "default", "None", "null"):
            return None
        v = str(v).strip()
        if not _ID.match(v):
            raise ValueError(f"not a shop id: {v[:40]!r}")
        return v

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, v: Any) -> str | None:
        if v is None or str(v).strip() in ("", "default"):
            return None
        parse_price_filter(str(v))
        return str(v)

    @field_validator("sort", mode="before")
    @classmethod
    def _sort(cls, v: Any) -> Any:
        return "default" if v in (None, "") else v

    @field_validator("service", mode="before")
    @classmethod
    def _service(cls, v: Any) -> str | None:
        if v is None:
            return None
        parts = v if isinstance(v, list) else str(v).split(",")
        if not all(isinstance(p, str) for p in parts):
            raise ValueError("service must be a comma-separated string of service names")
        parts = [p.strip() for p in parts if p.strip() and p.strip() != "default"]
        unknown = [p for p in parts if p not in SERVICES]
        if unknown:
            raise ValueError(f"unknown service {unknown[0][:30]!r}; choose from {', '.join(SERVICES)}")
        return ",".join(parts) or None

    def services(self) -> tuple[str, ...]:
        return tuple(self.service.split(",")) if self.service else ()


class ProductIdsArgs(ToolArgs):
    product_ids: str = Field(description="A comma-separated list of product_ids.")

    @field_validator("product_ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> str:
        return ",".join(_split_ids(v))

    def ids(self) -> list[str]:
        return [i for i in self.product_ids.split(",") if i]


class ViewProductArgs(ProductIdsArgs):
    @field_validator("product_ids")
    @classmethod
    def _limit(cls, v: str) -> str:
        n = len([i for i in v.split(",") if i])
        if n == 0:
            raise ValueError("give at least one product id")
        if n > MAX_VIEW_IDS:
            raise ValueError(f"at most {MAX_VIEW_IDS} products per call")
        return v


class RecommendArgs(ProductIdsArgs):
    product_ids: str = Field(description=(
        "A comma-separated list of product_ids: one id for a single product; N ids in the order the user "
        "asked for N products; for a shop selling N products, N ids all from that shop."))


class TerminateArgs(ToolArgs):
    status: Literal["success", "failure"] = Field("success", description="Whether the task was accomplished.")


class CalculateArgs(ToolArgs):
    expression: str = Field(description="Arithmetic only, e.g. '(120.5 + 89) * (1 - 0.2)', 'max(a*0.7, a-50)' "
                                        "with numbers; functions: min, max, abs, round, ceil, floor, sum.")


class AddToCartArgs(ToolArgs):
    product_id: str
    quantity: int = Field(1, ge=1, le=99)

    @field_validator("product_id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> str:
        ids = _split_ids(v)
        if len(ids) != 1:
            raise ValueError("give exactly one product_id")
        return ids[0]


class RemoveFromCartArgs(AddToCartArgs):
    quantity: int | None = Field(None, ge=1, le=99, description="How many to remove; all when omitted.")


class SearchHit(BaseModel):
    """One `find_product` hit, as ShoppingBench's search service answers it."""

    product_id: str
    shop_id: str
    title: str
    price: float
    service: list[str]
    sold_count: int


class ProductDetail(BaseModel):
    """One `view_product_information` answer, as ShoppingBench's product service answers it."""

    product_id: str
    short_description: str
    description: str
    sku_options: dict[str, dict[str, str]]
    attributes: dict[str, list[str]]


# -- the cart -----------------------------------------------------------------------------------
MAX_CART_QUANTITY = 99


@dataclass
class CartLine:
    product: dict[str, Any]
    quantity: int


@dataclass
class Cart:
    """One episode's cart. It owns pricing: the total, and the best voucher of a wallet applied."""

    lines: dict[str, CartLine] = field(default_factory=dict)

    def add(self, product: dict[str, Any], quantity: int) -> None:
        pid = product["product_id"]
        line = self.lines.get(pid)
        total = (line.quantity if line else 0) + quantity
        if total > MAX_CART_QUANTITY:
            raise ToolError(f"at most {MAX_CART_QUANTITY} of one product in the cart", ErrorKind.rejected)
        self.lines[pid] = CartLine(product=product, quantity=total)

    def remove(self, product_id: str, quantity: int | None = None) -> None:
        line = self.lines.get(product_id)
        if line is None:
            raise ToolError(f"product {product_id} is not in the cart", ErrorKind.not_found)
        if quantity is None or quantity >= line.quantity:
            del self.lines[product_id]
        else:
            line.quantity -= quantity

    def summary(self, wallet: list[Voucher], budget: float | None = None) -> dict[str, Any]:
        """Items, total, the voucher that lowers the total most, and whether it fits the budget."""
        items = [{"product_id": pid, "title": line.product["title"], "shop_id": line.product["shop_id"],
                  "price": line.product["price"], "quantity": line.quantity,
                  "subtotal": round(line.product["price"] * line.quantity, 2)} for pid, line in self.lines.items()]
        total = round(sum(i["subtotal"] for i in items), 2)
        shops = {i["shop_id"] for i in items}
        best: Voucher | None = None
        best_after = total
        for v in wallet:
            if items and v.applies_to(shops, total):
                after = max(0.0, v.price_after(total))
                if after < best_after:
                    best, best_after = v, after
        summary: dict[str, Any] = {"items": items, "total": total,
                                   "voucher": None if best is None else f"{best.voucher_id}: {best.describe()}",
                                   "discount": round(total - best_after, 2), "total_after_voucher": round(best_after, 2)}
        if budget is not None:
            summary["budget"] = budget
            summary["within_budget"] = best_after <= budget
        return summary

    def __len__(self) -> int:
        return len(self.lines)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.lines

    def __iter__(self):
        return iter(self.lines)

    def get(self, product_id: str) -> CartLine | None:
        return self.lines.get(product_id)

    def items(self):
        return self.lines.items()


# -- the toolkits ---------------------------------------------------------------------------------
class ShoppingBenchTools(Toolkit):
    """ShoppingBench's tools, as shoplab's profile serves them: validated arguments, readable errors."""

    group = "shoppingbench"

    @tool("read", icon="🔎", returns=list[SearchHit])
    def find_product(self, env: Episode, a: FindProductArgs) -> ToolOutput | list[dict[str, Any]]:
        """Search for products and return up to 10 products, each with product_id, shop_id, title, price, service and sold_count."""
        terms = query_terms(a.q)
        if not terms:
            raise ToolError("q has no searchable words (letters or digits)", ErrorKind.invalid_arguments)
        low, high = parse_price_filter(a.price) if a.price else (None, None)
        request = SearchRequest(terms=tuple(terms), page=a.page, shop_id=a.shop_id, price_min=low, price_max=high,
                                services=a.services(), sort=SortOrder(a.sort), text=a.q)
        page = env.search(a.q, request)
        products = [{k: h.product[k] for k in SEARCH_HIT_FIELDS} for h in page.hits]
        if not products:
            hint = "Try fewer or different words, or remove filters." if page.total == 0 else \
                f"Only {page.total} products match; there is no page {a.page}."
            return ToolOutput(f"No products found. {hint}", [])
        return products  # the episode shows data as compact JSON

    @tool("read", icon="📄", returns=list[ProductDetail])
    def view_product_information(self, env: Episode, a: ViewProductArgs) -> list[dict[str, Any]]:
        """Given product_ids, fetch their descriptions, SKU options and attributes."""
        ids = a.ids()
        found = env.world.products(ids)
        out = []
        for pid in ids:
            p = found.get(pid)
            if p is None:
                out.append({"product_id": pid, "error": "no such product"})
                continue
            item = {k: p[k] for k in DETAIL_FIELDS}
            if env.max_description_chars and len(item["description"]) > env.max_description_chars:
                item["description"] = item["description"][: env.max_description_chars] + "…"
            out.append(item)
        return out

    @tool("write", icon="⭐")
    def recommend_product(self, env: Episode, a: RecommendArgs) -> ToolOutput:
        """Recommend products to the user. The last recommendation is the answer."""
        ids = a.ids()
        if not ids:
            raise ToolError("give at least one product id", ErrorKind.invalid_arguments)
        found = env.world.products(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ToolError(f"unknown product ids: {', '.join(missing[:5])}; recommend ids returned by find_product",
                            ErrorKind.not_found)
        env.state.recommended = ids
        env.state.recommend_calls += 1
        return ToolOutput(f"Having recommended the products to the user: {','.join(ids)}.", ids)

    @tool("write", icon="🏁")
    def terminate(self, env: Episode, a: TerminateArgs) -> ToolOutput:
        """End the conversation once the task is done or cannot be done."""
        env.state.done = True
        env.state.terminate_status = a.status
        return ToolOutput("The conversation has ended.", a.status)



class UtilityTools(Toolkit):
    """Tools that need no shop: a safe `calculate` (ShoppingBench's agents run Python for this; shoplab
    never executes model output)."""

    group = "utility"

    @tool("read", icon="🧮")
    def calculate(self, a: CalculateArgs) -> ToolOutput:
        """Evaluate an arithmetic expression (prices, vouchers, budgets)."""
        try:
            value = calculate(a.expression)
        except CalculationError as exc:
            raise ToolError(str(exc), ErrorKind.rejected) from exc
        return ToolOutput(f"{value:g}" if isinstance(value, float) else str(value), value)


class CartTools(Toolkit):
    """A shopper's cart in the episode, priced with the best voucher of the episode's wallet."""

    group = "cart"
    stateless = False  # every tool reads or changes the episode's cart

    @tool("write", icon="🛒")
    def add_to_cart(self, env: Episode, a: AddToCartArgs) -> dict[str, Any]:
        """Put a product in the cart."""
        product = env.world.products([a.product_id]).get(a.product_id)
        if product is None:
            raise ToolError(f"no such product {a.product_id}", ErrorKind.not_found)
        env.state.cart.add(product, a.quantity)
        return env.cart_summary()

    @tool("read", icon="🛒")
    def view_cart(self, env: Episode) -> dict[str, Any]:
        """Show the cart: items, total, the best valid voucher applied, and the budget."""
        return env.cart_summary()

    @tool("write", icon="🛒")
    def remove_from_cart(self, env: Episode, a: RemoveFromCartArgs) -> dict[str, Any]:
        """Take a product (or some of its quantity) out of the cart."""
        env.state.cart.remove(a.product_id, a.quantity)
        return env.cart_summary()


BUILTIN_TOOLKITS: tuple[Toolkit, ...] = (ShoppingBenchTools(), UtilityTools(), CartTools())
TOOLS = {spec.name: spec for kit in BUILTIN_TOOLKITS for spec in kit.specs()}
"""The sandbox's own tools by name (derived from the toolkits; read-only by convention)."""


def tool_specs(selection: list[str] | None = None, toolkits: Sequence[Toolkit] = ()) -> list[ToolSpec]:
    """The specs of a tool selection (names or groups, as `ShoppingEnv(tools=...)` takes), in the
    order an episode lists them: without building an episode (prompts, training data)."""
    available = collect_tools([*BUILTIN_TOOLKITS, *toolkits])
    return [available[name].spec for name in select_tools(available, selection)]


def openai_tools(names: list[str] | None = None) -> list[dict[str, Any]]:
    return [TOOLS[n].openai_schema() for n in (names or list(TOOLS))]


