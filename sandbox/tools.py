"""The agent-facing tools: pydantic argument schemas (exported as OpenAI tool JSON), tagged read or write.

ShoppingBench's tools (`find_product`, `view_product_information`, `recommend_product`,
`terminate`), a safe `calculate`, and a cart (`add_to_cart`, `view_cart`, `remove_from_cart`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.data_model import SERVICES, ToolKind

MAX_QUERY_CHARS = 500
MAX_PAGE = 5
MAX_VIEW_IDS = 20
_PRICE = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*-\s*(\d+(?:\.\d+)?)?\s*$")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


class ToolArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class NoArgs(ToolArgs):
    pass


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args_model: type[ToolArgs]
    kind: ToolKind
    group: str = "shoppingbench"

    def openai_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        _strip_titles(schema)
        schema.setdefault("properties", {})
        schema.pop("additionalProperties", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": schema}}


def _strip_titles(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("title", None)
        for v in node.values():
            _strip_titles(v)
    elif isinstance(node, list):
        for v in node:
            _strip_titles(v)


TOOLS: dict[str, ToolSpec] = {t.name: t for t in [
    ToolSpec("find_product", "Search for products and return up to 10 products, each with product_id, shop_id, "
             "title, price, service and sold_count.", FindProductArgs, "read"),
    ToolSpec("view_product_information", "Given product_ids, fetch their descriptions, SKU options and "
             "attributes.", ViewProductArgs, "read"),
    ToolSpec("recommend_product", "Recommend products to the user. The last recommendation is the answer.",
             RecommendArgs, "write"),
    ToolSpec("terminate", "End the conversation once the task is done or cannot be done.", TerminateArgs, "write"),
    ToolSpec("calculate", "Evaluate an arithmetic expression (prices, vouchers, budgets).", CalculateArgs, "read",
             group="utility"),
    ToolSpec("add_to_cart", "Put a product in the cart.", AddToCartArgs, "write", group="cart"),
    ToolSpec("view_cart", "Show the cart: items, total, the best valid voucher applied, and the budget.", NoArgs,
             "read", group="cart"),
    ToolSpec("remove_from_cart", "Take a product (or some of its quantity) out of the cart.", RemoveFromCartArgs,
             "write", group="cart"),
]}

ToolHandler = Callable[[ToolArgs], Any]


def openai_tools(names: list[str] | None = None) -> list[dict[str, Any]]:
    return [TOOLS[n].openai_schema() for n in (names or list(TOOLS))]
