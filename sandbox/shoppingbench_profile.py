"""The `shoppingbench` profile: ShoppingBench's four tools exactly as its own client and server answer.

A result measured in shoplab must mean what it means in ShoppingBench, and an agent trained here must
meet the same world when it is evaluated there. So this toolkit restates upstream's published
behaviour rather than shoplab's (which validates arguments and explains mistakes; it is the better
tool for building agents, and stays the default of the demo and of custom toolkits: `profile: shoplab`).

Upstream's rules, restated (client: the agent's tool; server: the search service):

- **find_product(q, page, shop_id, price, sort, service)**. Without `q` or `page` the call fails
  (`null`). The client drops an empty `shop_id` / `price`, a `sort` or `service` that is empty or
  "default" (and the items "default" of a service list), and puts the rest in the URL as text. The
  server answers `[]` unless `page` is a digit string from 1 to 5; reads `price` only when it holds
  exactly one "-" with a number (Python `float`) on a side (anything else, e.g. "abc",
  "1,000-2,000" or "100", is no price filter; "500-100" keeps nothing); keeps only the services
  official / freeShipping / COD / flashsale, exactly spelled ("official, COD" is "official");
  ignores an unknown sort; filters by `shop_id` when one is given, whatever it is ("None" matches no
  shop). It then walks Lucene's top 100,000 BM25 hits for `q` in relevance order, keeps the first 50
  that pass the filters, stably sorts those 50 by price or sold count when asked, and answers page
  `page` of them (10 a page), each as product_id, shop_id, title, price, service, sold_count.
  Relevance is `sandbox.engines.lucene_bm25` (Lucene's analysis and BM25 k1 0.9 / b 0.4, exactly).
- **view_product_information(product_ids)**: the ids are the text split at "," with no trimming
  (" b" is not "b"); unknown ids are left out; no limit on their number; each answer is product_id,
  short_description, description (at most 2,000 characters, as upstream's catalogue stores it),
  sku_options, attributes.
- **recommend_product(product_ids)** always answers "Having recommended the products to the user:
  <product_ids>."; the answer the scorer reads is the text split at "," untrimmed, unknown ids and all.
- **terminate(status)** ends the episode: "The interaction has been completed with status: <status>".
- Observations are the results serialised as upstream does (`ujson.dumps`: compact, "\\/", "\\uXXXX";
  `null` when a call fails). A call never raises an error the agent reads: upstream has none.

Bounds that upstream lacks stay (rule: untrusted input is bounded): the episode's argument size
limit, and the calls per episode (`PROFILE_MAX_CALLS`: 30 model turns of up to 10 calls each).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

import ujson
from pydantic import ConfigDict, Field

from sandbox.engines.lucene_bm25 import RankedFilter
from sandbox.toolkit import Episode, ToolArgs, Toolkit, ToolOutput, tool
from sandbox.tools import ProductDetail, SearchHit

PROFILES = ("shoppingbench", "shoplab")
PROFILE_MAX_CALLS = 300
PAGE_SIZE = 10
MAX_PAGE = 5
KEPT_HITS = MAX_PAGE * PAGE_SIZE
MAX_TEXT_CHARS = 2000  # upstream's catalogue cuts descriptions at 2,000 characters
SEARCH_FIELDS = ("product_id", "shop_id", "title", "price", "service", "sold_count")
INFORMATION_FIELDS = ("product_id", "short_description", "description", "sku_options", "attributes")
SERVICES = ("official", "freeShipping", "COD", "flashsale")
SORTS = ("order", "priceasc", "pricedesc")


def upstream_json(results: Any) -> str:
    """An observation as upstream writes it (ujson's defaults)."""
    return ujson.dumps(results)


def _as_url_text(value: Any) -> str:
    """A value as upstream's server reads it back from the URL its client writes without quoting:
    Python's `str`, cut at "&" or "#", with "+" and %-escapes decoded."""
    text = str(value).split("#", 1)[0].split("&", 1)[0]
    return unquote_plus(text)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_upstream_price(price: str | None) -> tuple[float | None, float | None]:
    if not price or "-" not in price:
        return None, None
    parts = price.split("-")
    if len(parts) != 2:
        return None, None
    return _to_float(parts[0]), _to_float(parts[1])


def parse_upstream_services(service: str | None) -> tuple[str, ...]:
    kept: list[str] = []
    for s in (service or "").split(","):
        if s in SERVICES and s not in kept:
            kept.append(s)
    return tuple(kept)


def split_upstream_ids(product_ids: Any) -> list[str]:
    """Upstream's id list: the text split at ",", nothing trimmed or dropped."""
    return str(product_ids).split(",")


class _Loose(ToolArgs):
    """Upstream's tools take any JSON values (its client formats them into a URL); none is refused."""

    model_config = ConfigDict(extra="allow")


def _required(*names: str):
    def extra(schema: dict[str, Any]) -> None:
        schema["required"] = list(names)
    return extra


class FindProductLooseArgs(_Loose):
    model_config = ConfigDict(extra="allow", json_schema_extra=_required("q", "page"))
    q: Any = Field(None, json_schema_extra={"type": "string"},
                   description='The query used to search for products, e.g. "nike shoes", "backpack for college student".')
    page: Any = Field(None, json_schema_extra={"type": "integer"},
                      description="From 1 to 5: change it to get more products.")
    shop_id: Any = Field(None, json_schema_extra={"type": "string"},
                         description="A shop's shop_id: search for products within that shop.")
    price: Any = Field(None, json_schema_extra={"type": "string"},
                       description='The price range of the products, e.g. "0-100", "100-1000", "1000-".')
    sort: Any = Field(None, json_schema_extra={"type": "string", "enum": ["priceasc", "pricedesc", "order", "default"]},
                      description="priceasc / pricedesc: by price, ascending / descending; order: by sales volume, "
                                  "descending; default: by relevance to the query.")
    service: Any = Field(None, json_schema_extra={"type": "string"},
                         description="One or more of official (LazMall: authenticity guarantee, 15-day returns, "
                                     "7-day delivery), freeShipping, COD (cash on delivery), flashsale (LazFlash: "
                                     "limited-time discounts), default (no selection), joined with commas.")


class ProductIdsLooseArgs(_Loose):
    model_config = ConfigDict(extra="allow", json_schema_extra=_required("product_ids"))
    product_ids: Any = Field(None, json_schema_extra={"type": "string"},
                             description="A comma-separated list of product_ids.")


class RecommendLooseArgs(_Loose):
    model_config = ConfigDict(extra="allow", json_schema_extra=_required("product_ids"))
    product_ids: Any = Field(None, json_schema_extra={"type": "string"}, description=(
        "A comma-separated list of product_ids: one id when the user wants a single product; N ids in the "
        "order of the user's requirements for N products; for a shop selling N products, N ids in that "
        "order, all from the same shop."))


class TerminateLooseArgs(_Loose):
    model_config = ConfigDict(extra="allow", json_schema_extra=_required("status"))
    status: Any = Field(None, json_schema_extra={"type": "string", "enum": ["success", "failure"]},
                        description="How the task finished.")


def _given(a: ToolArgs, name: str) -> bool:
    return name in a.model_fields_set


def _output(results: Any) -> ToolOutput:
    return ToolOutput(upstream_json(results), results)


def upstream_find_product(world: Any, args: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`find_product` as upstream's client and server answer an agent's call, on the world's Lucene-exact
    index."""
    if "q" not in args or "page" not in args:
        return None
    q = args["q"]
    if not isinstance(q, str):  # the client's quote_plus fails on anything else
        return None
    shop_id = _as_url_text(args["shop_id"]) if args.get("shop_id") else None
    price = _as_url_text(args["price"]) if args.get("price") else None
    sort = args.get("sort")
    sort = None if not sort or sort == "default" else _as_url_text(sort)
    service = args.get("service")
    if not service or service == "default":
        service = None
    elif "default" in service:
        if not isinstance(service, str):
            return None
        service = ",".join(x for x in service.split(",") if x != "default")
    return upstream_search(world, q, _as_url_text(args["page"]), shop_id, price, sort,
                           _as_url_text(service) if service else None)


def upstream_search(world: Any, q: str | None, page_text: str | None, shop_id: str | None = None,
                    price: str | None = None, sort: str | None = None, service_text: str | None = None
                    ) -> list[dict[str, Any]] | None:
    """Upstream's search service on its query parameters (text, as its URL carries them); None where
    that service fails."""
    page_text = page_text or ""

    if not page_text.isdigit():
        return []
    try:
        page = int(page_text)
    except ValueError:  # a Unicode digit that int() refuses: upstream's server fails
        return None
    if not 1 <= page <= MAX_PAGE:
        return []
    low, high = parse_upstream_price(price)
    filters = RankedFilter(shop_id=shop_id or None, price_low=low, price_high=high,
                           services=parse_upstream_services(service_text))
    index = world.compat_index
    docids = index.ranked(q or "", filters, limit=KEPT_HITS)
    if docids is None:
        return None
    if sort in SORTS:
        prices, sold = index.sort_keys(docids)
        keyed = list(zip(docids, prices, sold, strict=True))
        if sort == "order":
            keyed.sort(key=lambda x: x[2], reverse=True)
        elif sort == "priceasc":
            keyed.sort(key=lambda x: x[1])
        else:
            keyed.sort(key=lambda x: x[1], reverse=True)
        docids = [d for d, _, _ in keyed]
    chosen = [index.product_id(d) for d in docids[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]
    records = world.products(chosen)
    return [{k: records[pid][k] for k in SEARCH_FIELDS} for pid in chosen if pid in records]


def upstream_view_product_information(world: Any, args: dict[str, Any], from_url: bool = False
                                      ) -> list[dict[str, Any]] | None:
    """`from_url`: the arguments are the service's query parameters, already read from its URL."""
    if "product_ids" not in args:
        return [] if from_url else None
    ids = split_upstream_ids(args["product_ids"] if from_url else _as_url_text(args["product_ids"]))
    found = world.products([i for i in ids if i])
    out = []
    for pid in ids:
        p = found.get(pid)
        if p is None:
            continue
        item = {k: p[k] for k in INFORMATION_FIELDS}
        for k in ("short_description", "description"):
            if isinstance(item[k], str):
                item[k] = item[k][:MAX_TEXT_CHARS]
        out.append(item)
    return out


class ShoppingBenchProfileTools(Toolkit):
    """ShoppingBench's tools as upstream answers them (see the module docstring)."""

    group = "shoppingbench"

    @tool("read", icon="🔎", returns=list[SearchHit] | None)
    def find_product(self, env: Episode, a: FindProductLooseArgs) -> ToolOutput:
        """Search for products and return up to 10 products, each with a product_id, shop_id, title, price, service and sold_count."""
        return _output(upstream_find_product(env.world, a.model_dump(include=a.model_fields_set)))

    @tool("read", icon="📄", returns=list[ProductDetail] | None)
    def view_product_information(self, env: Episode, a: ProductIdsLooseArgs) -> ToolOutput:
        """Given a list of product_ids (unique product identifiers), fetch their information: product descriptions, SKU options and SPU attributes."""
        return _output(upstream_view_product_information(env.world, a.model_dump(include=a.model_fields_set)))

    @tool("write", icon="⭐")
    def recommend_product(self, env: Episode, a: RecommendLooseArgs) -> ToolOutput:
        """Recommend the products to the user. You can use the tool only once."""
        product_ids = a.product_ids if _given(a, "product_ids") else ""
        env.state.recommended = split_upstream_ids(product_ids) if isinstance(product_ids, str) else []
        env.state.recommend_calls += 1
        return _output(f"Having recommended the products to the user: {product_ids}.")

    @tool("write", icon="🏁")
    def terminate(self, env: Episode, a: TerminateLooseArgs) -> ToolOutput:
        """Terminate the dialogue and declare the task completion status."""
        env.state.done = True
        if not _given(a, "status"):
            return _output(None)
        env.state.terminate_status = str(a.status)
        return _output(f"The interaction has been completed with status: {a.status}")


# -- upstream's search service on its own query parameters (`shoplab sandbox serve --profile shoppingbench`) --
def service_find_product(world: Any, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    return upstream_search(world, params.get("q"), params.get("page"), params.get("shop_id") or None,
                           params.get("price"), params.get("sort"), params.get("service"))


def service_view_product_information(world: Any, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    return upstream_view_product_information(world, params, from_url=True)


def upstream_service(tool: str) -> Any:
    """How upstream's search service answers `GET /<tool>` (a `service_<tool>` function here), or None for
    a tool it does not serve."""
    return globals().get(f"service_{tool}")
