"""The search-engine interface every backend implements, and the shared text analysis.

Query text from an agent is untrusted: it is never handed to an engine's query parser. Both
backends index text that `analyze` has already normalised and build their queries from the
same analysed terms, so no Lucene / query-DSL syntax can reach the engine and both engines see
identical tokens (which is what makes tantivy and Elasticsearch rank alike).
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache
from typing import Any

MAX_TOKEN_BYTES = 39  # tantivy's default tokenizer drops tokens of 40+ bytes; drop them for every engine
MAX_QUERY_TERMS = 64
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def analyze(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens, NFKC-normalised; the one tokenizer of the platform."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return [t for t in _TOKEN.findall(text) if len(t.encode("utf-8")) <= MAX_TOKEN_BYTES]


@lru_cache(maxsize=1 << 18)
def _analyze_word(word: str) -> tuple[str, ...]:
    return tuple(analyze(word))


def analyze_by_word(text: str) -> list[str]:
    """`analyze(text)`, computed word by word through a cache (catalogue text repeats its words).

    Exact: no token contains a space, NFKC composes nothing across one, and lower-casing's only
    context rule (a final sigma) stops at one, so a text's tokens are its space-separated words'
    tokens in order (tests/sandbox/test_build_pipeline.py checks it on hostile Unicode)."""
    tokens: list[str] = []
    for word in text.split(" "):
        tokens.extend(_analyze_word(word))
    return tokens


def query_terms(text: str) -> list[str]:
    """Distinct analysed terms of a query, in order, at most MAX_QUERY_TERMS."""
    seen: dict[str, None] = {}
    for t in analyze(text):
        seen.setdefault(t, None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


def searchable_raw_text(product: dict[str, Any]) -> str:
    """The product text BM25 indexes, before analysis: title, SKU values, attribute values, brand, category."""
    parts: list[str] = [product.get("title", "")]
    for option in (product.get("sku_options") or {}).values():
        parts.extend(option.values())
    for values in (product.get("attributes") or {}).values():
        parts.extend(values)
    parts.append(product.get("brand", ""))
    parts.append(product.get("category", ""))
    return " ".join(p for p in parts if p)


def searchable_text(product: dict[str, Any]) -> str:
    """What BM25 sees of a product: its searchable text as analysed tokens."""
    return " ".join(analyze_by_word(searchable_raw_text(product)))


class SortOrder(str, Enum):
    default = "default"  # BM25 relevance
    priceasc = "priceasc"
    pricedesc = "pricedesc"
    order = "order"  # sold count, descending


@dataclass(frozen=True)
class SearchRequest:
    """A validated search: analysed terms plus filters, all evaluated inside the engine.

    Relevance order is tiered BM25: products containing every term first (by BM25), then the
    products matching only some terms (by BM25), one consistent list that pages slice. Page 1 is
    the plain any-term BM25 page for ~97% of queries, and the conjunctive tier is ~7x cheaper to
    evaluate on a large catalogue. A sorted request matches products containing every term, and
    falls back to any-term when that finds nothing, so that "cheapest rubber wheel" is not the
    cheapest product that merely says "rubber".
    """

    terms: tuple[str, ...]
    page: int = 1
    page_size: int = 10
    shop_id: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    services: tuple[str, ...] = ()
    sort: SortOrder = SortOrder.default
    require_all_terms: bool = False
    exclude_all_terms: bool = False  # the any-term tier without the products that hold every term
    # The query as typed (bounded by the tool, MAX_QUERY_CHARS): what dense retrieval embeds. BM25 reads
    # only `terms`; a request built without it is embedded from its terms.
    text: str = ""

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


@dataclass
class SearchHit:
    product_id: str
    score: float
    product: dict[str, Any]


class SearchPage:
    """One page of hits and how many products match in all.

    `total` may be given as a function: an engine that collects only the hits a page needs (no count,
    which lets it skip work) counts on the first read, and only a caller that reads it pays for it."""

    def __init__(self, hits: list[SearchHit], total: int | Callable[[], int], request: SearchRequest,
                 relaxed: bool = False, extra: dict[str, Any] | None = None):
        self.hits = hits
        self._total = total
        self.request = request
        self.relaxed = relaxed  # the page left the all-terms tier (a sorted request: fell back to any-term)
        self.extra = extra if extra is not None else {}

    @property
    def total(self) -> int:
        if callable(self._total):
            self._total = int(self._total())
        return self._total

    @total.setter
    def total(self, value: int | Callable[[], int]) -> None:
        self._total = value

    def __repr__(self) -> str:
        total = "<not counted>" if callable(self._total) else self._total
        return f"SearchPage(hits={len(self.hits)}, total={total}, relaxed={self.relaxed})"


class SearchBackend(ABC):
    """A product index: bulk indexing, filtered BM25 search, lookup by id."""

    name: str = "base"

    @abstractmethod
    def index_products(self, products: Iterable[dict[str, Any]]) -> int:
        """Add products (ShoppingBench records as dicts); returns how many were indexed."""

    def index_prepared(self, rows: Iterable[Any]) -> int:
        """Add `PreparedProduct` rows (the build's fast path; a backend that cannot use them re-reads the records)."""
        return self.index_products(row.product() for row in rows)

    @abstractmethod
    def commit(self) -> None:
        """Make everything indexed so far durable and searchable."""

    @abstractmethod
    def search(self, request: SearchRequest) -> SearchPage: ...

    @abstractmethod
    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Full records of the ids that exist; unknown ids are simply absent."""

    @abstractmethod
    def count(self) -> int: ...

    def search_sorted_or_relaxed(self, request: SearchRequest) -> SearchPage:
        """Run a request with the platform's match rule (see SearchRequest)."""
        if len(request.terms) <= 1:
            return self.search(request)
        strict = self.search(replace(request, require_all_terms=True))
        if request.sort != SortOrder.default:
            if strict.total > 0:
                return strict
            relaxed = self.search(replace(request, require_all_terms=False))
            relaxed.relaxed = True
            return relaxed
        if strict.total >= request.offset + request.page_size:
            # The tiers are one list: its length is the number of products holding any of the terms.
            any_term = replace(request, require_all_terms=False, page=1, page_size=1)
            strict.total = lambda: self.search(any_term).total
            return strict
        # The page runs past the all-terms tier: fill it from the some-terms tier.
        n_strict = max(0, strict.total - request.offset)
        rest_offset = max(0, request.offset - strict.total)
        rest = self.search(replace(request, require_all_terms=False, exclude_all_terms=True,
                                   page=1, page_size=rest_offset + request.page_size - n_strict))
        hits = strict.hits + rest.hits[rest_offset:]
        return SearchPage(hits=hits[: request.page_size], total=strict.total + rest.total, request=request,
                          relaxed=True)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
