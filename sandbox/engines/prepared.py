"""Products made ready for indexing: every field both search profiles read, computed once, where
the product is made (a build worker), so that the building process only adds them to its indexes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from sandbox.engines.base import searchable_text
from sandbox.engines.lucene_bm25 import LuceneTerms, lucene_terms_of, shoppingbench_contents


class PreparedProduct(NamedTuple):
    """One product as the indexes take it."""

    product_id: str
    shop_id: str
    service: tuple[str, ...]
    price: float
    sold_count: int
    contents: str  # the shoplab profile's analysed text (`searchable_text`)
    doc: bytes  # the stored record (orjson)

    def product(self) -> dict[str, Any]:
        return orjson.loads(self.doc)


class PreparedChunk(NamedTuple):
    """Consecutive products, and their terms for the `shoppingbench` profile's Lucene index."""

    rows: list[PreparedProduct]
    lucene: LuceneTerms


def prepare(product: dict[str, Any]) -> PreparedProduct:
    return PreparedProduct(
        product_id=str(product["product_id"]), shop_id=str(product["shop_id"]),
        service=tuple(product.get("service") or ()), price=float(product["price"]),
        sold_count=int(product.get("sold_count") or 0), contents=searchable_text(product),
        # orjson returns its bytes in an ~8 KB block whatever their length: a chunk of 10,000 rows would hold
        # 80 MB instead of 8. An exact-size copy costs ~0.2 µs.
        doc=memoryview(orjson.dumps(product)).tobytes())


def prepare_chunk(products: Sequence[dict[str, Any]]) -> PreparedChunk:
    return PreparedChunk([prepare(p) for p in products], lucene_terms_of(shoppingbench_contents(p) for p in products))
