"""Embedded tantivy index on disk: BM25 over the analysed product text, filters and sorts in-engine."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import tantivy

from sandbox.engines.base import (
    SearchBackend,
    SearchHit,
    SearchPage,
    SearchRequest,
    SortOrder,
)
from sandbox.engines.prepared import PreparedProduct, prepare

_SORT_FIELD = {SortOrder.priceasc: ("price", tantivy.Order.Asc), SortOrder.pricedesc: ("price", tantivy.Order.Desc),
               SortOrder.order: ("sold_count", tantivy.Order.Desc)}


# The writer holds ~100 bytes per document it has not committed, beyond its indexing heap: a 10M-product
# build would need an extra GB. Committing this often keeps it flat (benchmarks/README.md, build memory).
COMMIT_EVERY = 1_000_000


def build_schema(product_id_fast: bool = True) -> tantivy.Schema:
    """`product_id_fast=False` is the earlier schema, kept for benchmarks/probe_schema_ab.py."""
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("product_id", stored=False, fast=product_id_fast, tokenizer_name="raw", index_option="basic")
    # Text is pre-analysed by `analyze`, so the default tokenizer only splits on the spaces we put there.
    sb.add_text_field("contents", stored=False, tokenizer_name="default", index_option="freq")
    sb.add_text_field("shop_id", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("service", stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_float_field("price", stored=False, indexed=True, fast=True)
    sb.add_integer_field("sold_count", stored=False, indexed=True, fast=True)
    sb.add_bytes_field("doc", stored=True)
    return sb.build()


class TantivyBackend(SearchBackend):
    name = "tantivy"

    def __init__(self, path: str | Path, create: bool = False, heap_size: int = 256_000_000, num_threads: int = 1):
        # One indexing thread: with two, documents land in segments in thread-timing order, BM25 ties
        # break by that order, and two builds of the same sandbox answered 16 of 312 dev queries with a
        # different top hit. Generation in Python is the build's bottleneck, so this costs no time.
        # A bounded indexing heap keeps build memory constant in N (tantivy flushes a segment when full).
        self.path = Path(path)
        if create:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
        elif not (self.path / "meta.json").exists():
            raise FileNotFoundError(f"no tantivy index at {self.path}; run `shoplab sandbox build` first")
        self.schema = build_schema()
        self.index = tantivy.Index(self.schema, path=str(self.path))
        self._heap_size = heap_size
        self._num_threads = num_threads
        self._writer: tantivy.IndexWriter | None = None
        self._uncommitted = 0
        self._searcher: tantivy.Searcher | None = None

    # -- indexing -----------------------------------------------------------------
    def _document(self, row: PreparedProduct) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_text("product_id", row.product_id)
        doc.add_text("contents", row.contents)
        doc.add_text("shop_id", row.shop_id)
        for s in row.service:
            doc.add_text("service", s)
        doc.add_float("price", row.price)
        doc.add_integer("sold_count", row.sold_count)
        doc.add_bytes("doc", row.doc)
        return doc

    def index_products(self, products: Iterable[dict[str, Any]]) -> int:
        return self.index_prepared(prepare(p) for p in products)

    def index_prepared(self, rows: Iterable[PreparedProduct]) -> int:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=self._heap_size, num_threads=self._num_threads)
        n = 0
        for row in rows:
            self._writer.add_document(self._document(row))
            n += 1
        self._uncommitted += n
        if self._uncommitted >= COMMIT_EVERY:
            self._writer.commit()
            self._uncommitted = 0
        return n

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
        self.index.reload()
        self._searcher = None

    # -- querying -----------------------------------------------------------------
    @property
    def searcher(self) -> tantivy.Searcher:
        if self._searcher is None:
            self.index.reload()
            self._searcher = self.index.searcher()
        return self._searcher

    def _filter(self, query: tantivy.Query) -> tantivy.Query:
        # Filters restrict the match set but must not add to the BM25 score.
        return tantivy.Query.const_score_query(query, 0.0)

    def text_query(self, terms: Sequence[str], require_all: bool) -> tantivy.Query:
        occur = tantivy.Occur.Must if require_all else tantivy.Occur.Should
        clauses = [(occur, tantivy.Query.term_query(self.schema, "contents", t, index_option="freq")) for t in terms]
        return tantivy.Query.boolean_query(clauses)

    def filter_clauses(self, request: SearchRequest) -> list[tuple[tantivy.Occur, tantivy.Query]]:
        must = tantivy.Occur.Must
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        if request.shop_id is not None:
            clauses.append((must, self._filter(tantivy.Query.term_query(self.schema, "shop_id", request.shop_id))))
        if request.price_min is not None or request.price_max is not None:
            rq = tantivy.Query.range_query(self.schema, "price", tantivy.FieldType.Float,
                                           lower_bound=request.price_min, upper_bound=request.price_max)
            clauses.append((must, self._filter(rq)))
        for s in request.services:
            clauses.append((must, self._filter(tantivy.Query.term_query(self.schema, "service", s))))
        return clauses

    def build_query(self, request: SearchRequest) -> tantivy.Query:
        text = self.text_query(request.terms, request.require_all_terms)
        filters = self.filter_clauses(request)
        if request.exclude_all_terms:
            filters.append((tantivy.Occur.MustNot, self.text_query(request.terms, True)))
        if not filters:
            return text
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, text), *filters])

    def search(self, request: SearchRequest) -> SearchPage:
        if not request.terms:
            return SearchPage(hits=[], total=0, request=request)
        query = self.build_query(request)
        searcher = self.searcher
        kwargs: dict[str, Any] = {"limit": request.page_size, "offset": request.offset, "count": True}
        if request.sort in _SORT_FIELD:
            field, order = _SORT_FIELD[request.sort]
            kwargs.update(order_by_field=field, order=order)
        result = searcher.search(query, **kwargs)
        hits = []
        for key, address in result.hits:
            product = orjson.loads(searcher.doc(address)["doc"][0])
            score = float(key) if request.sort == SortOrder.default else 0.0
            hits.append(SearchHit(product_id=product["product_id"], score=score, product=product))
        return SearchPage(hits=hits, total=int(result.count or 0), request=request)

    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(str(i) for i in product_ids))
        if not ids:
            return {}
        searcher = self.searcher
        query = tantivy.Query.term_set_query(self.schema, "product_id", ids)
        result = searcher.search(query, limit=len(ids), count=False)
        out: dict[str, dict[str, Any]] = {}
        for _, address in result.hits:
            product = orjson.loads(searcher.doc(address)["doc"][0])
            out[product["product_id"]] = product
        return out

    def count(self) -> int:
        return int(self.searcher.num_docs)

    def iter_all(self, batch: int = 50_000) -> Iterable[dict[str, Any]]:
        """Every stored product once (export, re-indexing into another backend).

        Pages over all documents sorted by the unique, fast `product_id` field, so paging is stable."""
        searcher = self.searcher
        total = searcher.num_docs
        for offset in range(0, total, batch):
            res = searcher.search(tantivy.Query.all_query(), limit=batch, offset=offset, count=False,
                                  order_by_field="product_id", order=tantivy.Order.Asc)
            for _, address in res.hits:
                yield orjson.loads(searcher.doc(address)["doc"][0])
