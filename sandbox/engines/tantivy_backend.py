"""Embedded tantivy index on disk: BM25 over the analysed product text, filters and sorts in-engine."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
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


_MAX_CACHED_IMPACTS = 200_000
_PRECOMPUTED_IMPACTS = 50_000
IMPACTS_FILE = "tantivy_max_impacts.json"  # beside the index folder, which tantivy owns
# The writer holds ~100 bytes per document it has not committed, beyond its indexing heap: a 10M-product
# build would need an extra GB. Committing this often keeps it flat (benchmarks/README.md, build memory).
COMMIT_EVERY = 1_000_000
HEAP_PER_COMMIT = 256_000_000  # the indexing heap that holds COMMIT_EVERY documents without an early flush
# tantivy's log merge policy merges once 8 segments sit at one level; a merge reads its segments through mmap,
# and those pages count in the build's RSS (2.9 GB of a 10M build's 3.7 GB peak). A build of at most this many
# commits, one segment each, never merges.
MAX_BUILD_SEGMENTS = 7


def build_writer_settings(n_documents: int) -> tuple[int, int]:
    """(commit_every, heap_size) for a build of `n_documents`: every COMMIT_EVERY documents as before, or fewer,
    larger commits (and a heap grown in proportion) when that would make more than MAX_BUILD_SEGMENTS segments."""
    commit_every = max(COMMIT_EVERY, -(-int(n_documents) // MAX_BUILD_SEGMENTS))
    return commit_every, HEAP_PER_COMMIT * commit_every // COMMIT_EVERY


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

    def __init__(self, path: str | Path, create: bool = False, heap_size: int = HEAP_PER_COMMIT, num_threads: int = 1,
                 commit_every: int = COMMIT_EVERY):
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
        self._commit_every = commit_every
        self._writer: tantivy.IndexWriter | None = None
        self._uncommitted = 0
        self._searcher: tantivy.Searcher | None = None
        self._impacts: dict[str, float] = {}
        # The words the last planned some-terms query required and those it only scored (EXPLAIN-like;
        # None when the last request needed no plan).
        self.last_plan: tuple[tuple[str, ...], tuple[str, ...]] | None = None

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
        if self._uncommitted >= self._commit_every:
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
        self.save_max_impacts()

    # -- max impacts: what MaxScore plans with ----------------------------------------------------------
    def _index_signature(self) -> str:
        meta = self.path / "meta.json"
        return hashlib.sha1(meta.read_bytes()).hexdigest() if meta.exists() else ""

    def save_max_impacts(self) -> None:
        """Compute the max impact of the most frequent terms once, beside the index.

        A cold `max_impact` is a top-1 search (~0.1 ms for a common word at 2.5M products); frequent
        words are the ones a planned query needs, and a catalogue's are few (~4,000 at 2.5M)."""
        terms = [t for t, _ in self.searcher.terms_with_prefix("contents", "", limit=_PRECOMPUTED_IMPACTS)]
        impacts = {t: self.max_impact(t) for t in terms}
        payload = {"index": self._index_signature(), "impacts": impacts}
        (self.path.parent / IMPACTS_FILE).write_bytes(orjson.dumps(payload))

    def _load_max_impacts(self) -> dict[str, float]:
        path = self.path.parent / IMPACTS_FILE
        try:
            payload = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        if payload.get("index") != self._index_signature():
            return {}  # written for another state of the index
        return {str(t): float(v) for t, v in payload.get("impacts", {}).items()}

    # -- querying -----------------------------------------------------------------
    @property
    def searcher(self) -> tantivy.Searcher:
        if self._searcher is None:
            self.index.reload()
            self._searcher = self.index.searcher()
            self._impacts = self._load_max_impacts()  # statistics may have changed
        return self._searcher

    def _filter(self, query: tantivy.Query) -> tantivy.Query:
        # Filters restrict the match set but must not add to the BM25 score.
        return tantivy.Query.const_score_query(query, 0.0)

    def text_query(self, terms: Sequence[str], require_all: bool) -> tantivy.Query:
        occur = tantivy.Occur.Must if require_all else tantivy.Occur.Should
        clauses = [(occur, self._term(t)) for t in terms]
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
        """One request as it is: its own match rule, an exact count."""
        if not request.terms:
            return SearchPage(hits=[], total=0, request=request)
        query = self.build_query(request)
        result = self.searcher.search(query, count=True, **self._collect_kwargs(request, request.page_size,
                                                                                request.offset))
        return SearchPage(hits=self._hits(result.hits, request), total=int(result.count or 0), request=request)

    # -- the platform's match rule, planned ------------------------------------------------------------
    def search_sorted_or_relaxed(self, request: SearchRequest) -> SearchPage:
        """`SearchBackend.search_sorted_or_relaxed`, answered with the same pages, faster.

        Each tier collects only the hits the page needs and never counts (a count makes the engine visit
        every match); `total` is exact for free when a tier runs out, otherwise counted on first read.
        The some-terms tier, the slow one, is planned by MaxScore (`_any_terms_top`)."""
        self.last_plan = None
        if not request.terms:
            return SearchPage(hits=[], total=0, request=request)
        needed = request.offset + request.page_size
        searcher = self.searcher
        if len(request.terms) <= 1:
            return self._tier_page(request, self.build_query(request), needed)
        strict_query = self.build_query(replace(request, require_all_terms=True))
        if request.sort != SortOrder.default:
            page = self._tier_page(request, strict_query, needed)
            if page.hits or page.total > 0:  # total is exact here whenever the page is empty
                return page
            page = self._tier_page(request, self.build_query(replace(request, require_all_terms=False)), needed)
            page.relaxed = True
            return page
        if any(searcher.doc_freq("contents", t) == 0 for t in request.terms):
            strict = []  # a word no product holds: the all-terms tier is empty, no need to ask
        else:
            strict = searcher.search(strict_query, count=False, **self._collect_kwargs(request, needed)).hits
        if len(strict) >= needed:
            return SearchPage(hits=self._hits(strict[request.offset:needed], request), request=request,
                              total=self._any_terms_total(request))
        return self._any_terms_page(request, strict, needed)

    def _any_terms_page(self, request: SearchRequest, strict: list[tuple[Any, tantivy.DocAddress]],
                        needed: int) -> SearchPage:
        """A page that runs past the all-terms tier, all of which (`strict`) is in hand.

        The some-terms tier's first products are the any-term ranking's first `needed` without `strict`
        (same scores, same tie-break), which needs no exclusion clause, so an unfiltered union keeps
        block-max WAND."""
        top = self._any_terms_top(request, needed)
        in_strict = {(a.segment_ord, a.doc) for _, a in strict}
        rest = [hit for hit in top if (hit[1].segment_ord, hit[1].doc) not in in_strict]
        # Every match was collected when the ranking ran short.
        total = len(top) if len(top) < needed else self._any_terms_total(request)
        hits = (strict + rest)[request.offset:needed]
        return SearchPage(hits=self._hits(hits, request), total=total, request=request, relaxed=True)

    def _any_terms_top(self, request: SearchRequest, k: int) -> list[tuple[Any, tantivy.DocAddress]]:
        """The top `k` products holding any of the request's terms (with its filters), exactly as the plain
        disjunction ranks them.

        Without filters the disjunction is a pure union, which tantivy prunes with block-max WAND. With
        filters it gets no dynamic pruning and scores every product holding any word (100k-500k for
        common words), so it is planned by MaxScore: each term's largest possible contribution
        (`max_impact`, its top single-term BM25 score) bounds what a product holding only low-impact terms
        can reach. A first query over the highest-impact terms gives k real scores; the k-th, theta, is a
        lower bound on the final k-th score. A product holding none of the terms outside the longest
        low-impact tail whose bounds sum below theta cannot reach the top k, so the final query requires
        one of the other terms and adds the tail's scores where present
        (tests/sandbox/test_search_planner.py checks pages against the plain query)."""
        searcher = self.searcher
        self.last_plan = None
        kwargs = self._collect_kwargs(request, k)
        terms = sorted((t for t in request.terms if self.max_impact(t) > 0.0),
                       key=lambda t: (-self.max_impact(t), t))
        if not terms:  # none of the words is in the catalogue
            return []
        filters = self.filter_clauses(request)
        if not filters or len(terms) == 1:
            return searcher.search(self._any_terms_query(terms, [], filters), count=False, **kwargs).hits
        lead = 1
        while True:
            hits = searcher.search(self._any_terms_query(terms[:lead], terms[lead:], filters), count=False,
                                   **kwargs).hits
            if len(hits) >= k or lead == len(terms):
                break
            lead = min(2 * lead, len(terms))  # too few products hold the leading terms: widen
        if len(hits) < k:
            self.last_plan = (tuple(terms), ())
            return hits  # every term was required: this is the plain query
        theta = float(hits[-1][0])
        bound, cut = 0.0, len(terms)
        # Strictly below theta, with a margin for float rounding: a product at exactly theta could tie.
        while cut > 1 and bound + self.max_impact(terms[cut - 1]) < theta * (1.0 - 1e-5):
            cut -= 1
            bound += self.max_impact(terms[cut])
        self.last_plan = (tuple(terms[:max(cut, lead)]), tuple(terms[max(cut, lead):]))
        if cut <= lead:
            return hits  # every product that could rank was already a candidate
        return searcher.search(self._any_terms_query(terms[:cut], terms[cut:], filters), count=False,
                               **kwargs).hits

    def _any_terms_query(self, required_any: Sequence[str], optional: Sequence[str],
                         filters: list[tuple[tantivy.Occur, tantivy.Query]]) -> tantivy.Query:
        """Products holding one of `required_any`, scored over those and `optional`, filtered."""
        text = self.text_query(required_any, False)
        if not optional and not filters:
            return text
        clauses = [(tantivy.Occur.Must, text)]
        clauses += [(tantivy.Occur.Should, self._term(t)) for t in optional]
        return tantivy.Query.boolean_query(clauses + filters)

    def max_impact(self, term: str) -> float:
        """The largest BM25 score `term` alone gives any product (0.0 when no product holds it).

        A single-term top-1 search: tantivy skips blocks by their max score, so it reads little. Cached
        per searcher (statistics change with the index), bounded: terms come from untrusted queries."""
        searcher = self.searcher  # first: a new searcher brings its own impacts
        value = self._impacts.get(term)
        if value is None:
            if len(self._impacts) >= _MAX_CACHED_IMPACTS:
                self._impacts.clear()
            hits = searcher.search(self._term(term), limit=1, count=False).hits
            value = self._impacts[term] = float(hits[0][0]) if hits else 0.0
        return value

    def _term(self, term: str) -> tantivy.Query:
        return tantivy.Query.term_query(self.schema, "contents", term, index_option="freq")

    def _collect_kwargs(self, request: SearchRequest, limit: int, offset: int = 0) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"limit": limit, "offset": offset}
        if request.sort in _SORT_FIELD:
            field, order = _SORT_FIELD[request.sort]
            kwargs.update(order_by_field=field, order=order)
        return kwargs

    def _tier_page(self, request: SearchRequest, query: tantivy.Query, needed: int) -> SearchPage:
        """One query's page, collecting only the `needed` first hits; counted lazily when they fill it."""
        hits = self.searcher.search(query, count=False, **self._collect_kwargs(request, needed)).hits
        total: int | Callable[[], int] = len(hits) if len(hits) < needed else (lambda: self._count(query))
        return SearchPage(hits=self._hits(hits[request.offset:], request), total=total, request=request)

    def _count(self, query: tantivy.Query) -> int:
        return int(self.searcher.search(query, limit=1, count=True).count or 0)

    def _any_terms_total(self, request: SearchRequest) -> Callable[[], int]:
        """Both tiers' length, counted when read: the products holding any of the terms."""
        query = self.build_query(replace(request, require_all_terms=False))
        return lambda: self._count(query)

    def _hits(self, hits: Sequence[tuple[Any, tantivy.DocAddress]], request: SearchRequest) -> list[SearchHit]:
        searcher = self.searcher
        out = []
        for key, address in hits:
            product = orjson.loads(searcher.doc(address)["doc"][0])
            score = float(key) if request.sort == SortOrder.default else 0.0
            out.append(SearchHit(product_id=product["product_id"], score=score, product=product))
        return out

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

    def stored_in_document_order(self) -> Iterator[tuple[int, int, bytes]]:
        """(segment, doc, stored record) of every document the store holds, in document order. Deleted
        documents are included: their records stay in the store until a merge."""
        searcher = self.searcher
        for segment in range(searcher.num_segments):
            doc = 0
            while True:
                try:
                    stored = searcher.doc(tantivy.DocAddress(segment, doc))
                except ValueError:  # past the segment's last document
                    break
                yield segment, doc, stored["doc"][0]
                doc += 1

    def iter_all(self, batch: int = 50_000) -> Iterable[dict[str, Any]]:
        """Every stored product once, in product-id order (export, the dense index, re-indexing elsewhere).

        Two linear passes: the stored records in document order give each product's id and address, then
        the records are read again in id order. Paging a product-id-sorted query with an offset (the
        previous method, `_iter_all_paged`) revisits every document on every page: quadratic (at 2.5M
        products it had given 501,000 after 164.5 s; this reads all 2.5M in 43 s, benchmarks/bench_iter_all.py).
        `batch` only sizes the arrays the first pass fills."""
        stored = self.stored_in_document_order()
        ids: list[np.ndarray] = []
        addresses: list[np.ndarray] = []
        while chunk := list(itertools.islice(stored, max(1, int(batch)))):
            ids.append(np.array([str(orjson.loads(raw)["product_id"]).encode() for _, _, raw in chunk]))
            addresses.append(np.array([(segment, doc) for segment, doc, _ in chunk], dtype=np.uint32))
        n = sum(len(a) for a in ids)
        if n != self.searcher.num_docs:  # deleted documents still sit in the store: fall back to the query
            yield from self._iter_all_paged(batch)
            return
        if not n:
            return
        # UTF-8 byte order is code-point order, and it is the order order_by_field="product_id" pages in.
        order = np.argsort(np.concatenate(ids), kind="stable")
        searcher = self.searcher
        for segment, doc in np.concatenate(addresses)[order].tolist():
            yield orjson.loads(searcher.doc(tantivy.DocAddress(segment, doc))["doc"][0])

    def _iter_all_paged(self, batch: int = 50_000) -> Iterable[dict[str, Any]]:
        """Every live product, paging a query sorted by the unique, fast `product_id` field (quadratic)."""
        searcher = self.searcher
        total = searcher.num_docs
        for offset in range(0, total, batch):
            res = searcher.search(tantivy.Query.all_query(), limit=batch, offset=offset, count=False,
                                  order_by_field="product_id", order=tantivy.Order.Asc)
            for _, address in res.hits:
                yield orjson.loads(searcher.doc(address)["doc"][0])
