"""Records of the shopping world: products (ShoppingBench's 15 fields), shops, vouchers."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SERVICES: tuple[str, ...] = ("official", "freeShipping", "COD", "flashsale")

PRODUCT_FIELDS: tuple[str, ...] = (
    "product_id", "shop_id", "brand", "category", "title", "short_description", "description",
    "specification", "price", "sold_count", "sku_options", "attributes", "main_image_url",
    "product_url", "service",
)
# What ShoppingBench's search API answers per hit, and what its product-detail API answers.
SEARCH_HIT_FIELDS: tuple[str, ...] = ("product_id", "shop_id", "title", "price", "service", "sold_count")
DETAIL_FIELDS: tuple[str, ...] = ("product_id", "short_description", "description", "sku_options", "attributes")


class Product(BaseModel):
    """One catalogue product, field for field as ShoppingBench's documents."""

    model_config = ConfigDict(extra="ignore")

    product_id: str
    shop_id: str
    brand: str = ""
    category: str = ""
    title: str
    short_description: str = ""
    description: str = ""
    specification: str = ""
    price: float
    sold_count: int = 0
    sku_options: dict[str, dict[str, str]] = Field(default_factory=dict)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    main_image_url: str = ""
    product_url: str = ""
    service: list[str] = Field(default_factory=list)

    @field_validator("product_id", "shop_id", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any) -> str:
        return str(value)

    @field_validator("sku_options", mode="before")
    @classmethod
    def _sku_options_as_dict(cls, value: Any) -> Any:
        # Some exports carry the SKU map as a JSON string or as a list of options.
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if isinstance(value, list):
            value = {str(i + 1): option for i, option in enumerate(value)}
        return {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in (value or {}).items()}

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_values_as_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in (value or {}).items()}


class Shop(BaseModel):
    shop_id: str
    name: str
    official: bool = False
    rating: float = 4.5


class VoucherType(str, Enum):
    platform = "platform"
    shop = "shop"


class DiscountType(str, Enum):
    fixed = "fixed"
    percentage = "percentage"


class Voucher(BaseModel):
    """A platform- or shop-wide voucher: valid once the basket total reaches `threshold`."""

    voucher_id: str
    voucher_type: VoucherType
    shop_id: str | None = None
    threshold: float
    discount_type: DiscountType
    face_value: float | None = None
    discount: float | None = None
    cap: float | None = None

    def applies_to(self, shop_ids: set[str], total: float) -> bool:
        if total < self.threshold:
            return False
        if self.voucher_type == VoucherType.platform:
            return True
        return len(shop_ids) == 1 and (self.shop_id is None or shop_ids == {self.shop_id})

    def price_after(self, total: float) -> float:
        """ShoppingBench's discount rule: fixed face value, or a percentage limited by the cap."""
        if self.discount_type == DiscountType.fixed:
            return total - float(self.face_value or 0.0)
        rate = float(self.discount or 0.0)
        cap = float(self.cap) if self.cap is not None else float("inf")
        return max(total * (1.0 - rate), total - cap)

    def describe(self) -> str:
        """What a shopper reads, e.g. `34 off orders of 170 or more` or `50% off orders of 28 or more from
        one shop (at most 19 off)`."""
        scope = "" if self.voucher_type == VoucherType.platform else " from one shop"
        if self.discount_type == DiscountType.fixed:
            return f"{self.face_value:g} off orders of {self.threshold:g} or more{scope}"
        cap = f" (at most {self.cap:g} off)" if self.cap is not None else ""
        return f"{100 * (self.discount or 0):g}% off orders of {self.threshold:g} or more{scope}{cap}"


class Intent(str, Enum):
    product = "product"
    shop = "shop"
    voucher = "voucher"
    web = "web"


ToolKind = Literal["read", "write"]


def normalize_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A full product record as the catalogue stores it, from a loosely spelled one (task files
    from elsewhere may give SKUs as a list, a bare attribute value, nulls, numbers as text)."""
    record = {f: raw.get(f) for f in PRODUCT_FIELDS if raw.get(f) is not None}
    try:
        record["price"] = float(record.get("price") or 0.0)
    except (TypeError, ValueError):
        record["price"] = 0.0
    try:
        record["sold_count"] = int(float(record.get("sold_count") or 0))
    except (TypeError, ValueError):
        record["sold_count"] = 0
    record["product_id"] = str(record.get("product_id", ""))
    record["shop_id"] = str(record.get("shop_id", ""))
    record["title"] = str(record.get("title", ""))
    service = record.get("service") or []
    record["service"] = [service] if isinstance(service, str) else [str(s) for s in service]
    for k in ("brand", "category", "short_description", "description", "specification", "main_image_url",
              "product_url"):
        record[k] = str(record.get(k) or "")
    return Product.model_validate(record).model_dump()
