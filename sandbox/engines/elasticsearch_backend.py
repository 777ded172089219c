"""Elasticsearch 8/9 (or OpenSearch-compatible) product index with the same query semantics as tantivy.

The index stores the text that `searchable_text` has already analysed, and its `contents` field is
analysed by a whitespace tokenizer plus a lowercase filter, so Elasticsearch sees exactly the tokens
tantivy sees. Queries are built from `SearchRequest.terms` only (one `term` query per analysed term);
no user text ever reaches `query_string` / `simple_query_string`, so no query syntax can be injected.

Scoring is Lucene's BM25 (k1 1.2, b 0.75): the same formula as tantivy up to a constant factor
(tantivy multiplies every score by k1 + 1 = 2.2), so rankings agree. Two differences remain on a real
cluster: Lucene stores document lengths of 24+ tokens lossily in one byte while tantivy is exact up to
40 tokens (near-ties between long documents may swap), and a multi-shard index computes idf per shard
unless you query with `search_type=dfs_query_then_fetch` (use one shard for exact parity, the default).

Filters (shop, price range, services) sit in `bool.filter`, so they restrict matches without scoring.
Products are indexed with `_id` = product_id: re-indexing a product id replaces it (tantivy would
keep both copies).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from elasticsearch import Elasticsearch, helpers

from sandbox.engines.base import (
    SearchBackend,
    SearchHit,
    SearchPage,
    SearchRequest,
    SortOrder,
    searchable_text,
)

DEFAULT_URL = "http://localhost:9200"
DEFAULT_INDEX = "shoplab-products"
ANALYZER = "shoplab_whitespace_lower"
SIMILARITY = "shoplab_bm25"
BULK_CHUNK_SIZE = 2000
MAX_REPORTED_ERRORS = 5

_SORT = {
    SortOrder.priceasc: [{"price": {"order": "asc"}}],
    SortOrder.pricedesc: [{"price": {"order": "desc"}}],
    SortOrder.order: [{"sold_count": {"order": "desc"}}],
}


class IndexingError(RuntimeError):
    """Some products were not indexed; the others were. Carries every failure, the message the first few."""

    def __init__(self, failures: list[tuple[str, str]], indexed: int):
        self.failures = failures  # (product id, reason)
        self.indexed = indexed
        shown = "; ".join(f"{pid}: {reason}" for pid, reason in failures[:MAX_REPORTED_ERRORS])
        more = f" (and {len(failures) - MAX_REPORTED_ERRORS} more)" if len(failures) > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{len(failures)} product(s) failed to index, {indexed} indexed: {shown}{more}")


SERVING_REFRESH_INTERVAL = "1s"  # Elasticsearch's default, restored once a build's bulk load is over


def index_body(number_of_shards: int = 1, number_of_replicas: int = 0) -> dict[str, Any]:
    """Settings and the explicit mapping of the product index."""
    return {
        "settings": {
            "index": {
                "number_of_shards": number_of_shards,
                "number_of_replicas": number_of_replicas,
                "similarity": {SIMILARITY: {"type": "BM25", "k1": 1.2, "b": 0.75}},
                "analysis": {
                    "analyzer": {ANALYZER: {"type": "custom", "tokenizer": "whitespace", "filter": ["lowercase"]}}
                },
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "product_id": {"type": "keyword"},
                "contents": {"type": "text", "analyzer": ANALYZER, "similarity": SIMILARITY},
                "shop_id": {"type": "keyword"},
                "service": {"type": "keyword"},
                "price": {"type": "double"},
                "sold_count": {"type": "long"},
                "doc": {"type": "object", "enabled": False},  # the full record, stored in _source only
            },
        },
    }


def _reason(error: Any) -> str:
    """A one-line reason from a bulk item error (a dict with type/reason/caused_by, or a string)."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" ({cause.get('type', '')}: {cause['reason']})"
        return text
    return str(error)


class ElasticsearchBackend(SearchBackend):
    name = "elasticsearch"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        index: str = DEFAULT_INDEX,
        api_key: str | tuple[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        number_of_shards: int = 1,
        number_of_replicas: int = 0,
        create: bool = False,
        node_class: Any = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        request_timeout: float = 30,
        refresh_on_commit: bool = True,
    ):
        self.url = url
        self.index = index
        self.refresh_on_commit = refresh_on_commit
        kwargs: dict[str, Any] = {"request_timeout": request_timeout}
        if api_key is not None:
            kwargs["api_key"] = api_key
        if basic_auth is not None:
            kwargs["basic_auth"] = basic_auth
        if node_class is not None:
            kwargs["node_class"] = node_class
        if url.startswith("https"):
            kwargs["verify_certs"] = verify_certs
            if ca_certs is not None:
                kwargs["ca_certs"] = ca_certs
        self.client = Elasticsearch(url, **kwargs)
        self._after_bulk: dict[str, Any] | None = None
        if create:
            self.create_index(number_of_shards, number_of_replicas)

    @classmethod
    def from_env(cls, **overrides: Any) -> ElasticsearchBackend:
        """Configure from SHOPLAB_ES_URL, _API_KEY, _INDEX, _SHARDS, _REPLICAS, _CA_CERTS; overrides win."""
        env = os.environ
        kwargs: dict[str, Any] = {
            "url": env.get("SHOPLAB_ES_URL", DEFAULT_URL),
            "index": env.get("SHOPLAB_ES_INDEX", DEFAULT_INDEX),
            "api_key": env.get("SHOPLAB_ES_API_KEY") or None,
            "number_of_shards": int(env.get("SHOPLAB_ES_SHARDS", "1")),
            "number_of_replicas": int(env.get("SHOPLAB_ES_REPLICAS", "0")),
            "ca_certs": env.get("SHOPLAB_ES_CA_CERTS") or None,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- index management -----------------------------------------------------------
    def create_index(self, number_of_shards: int = 1, number_of_replicas: int = 0) -> None:
        """Delete the index if it exists and create it empty with the explicit mapping, set up for bulk
        loading: no periodic refresh and no replicas until `commit` (each refresh makes a segment to
        merge later, and each replica indexes every document again)."""
        self.client.options(ignore_status=404).indices.delete(index=self.index)
        body = index_body(number_of_shards, 0)
        body["settings"]["index"]["refresh_interval"] = "-1"
        self.client.indices.create(index=self.index, **body)
        self._after_bulk = {"refresh_interval": SERVING_REFRESH_INTERVAL, "number_of_replicas": number_of_replicas}

    def mapping(self) -> dict[str, Any]:
        """The mapping the cluster holds for the index (as `GET index/_mapping` answers it)."""
        return dict(self.client.indices.get_mapping(index=self.index)[self.index]["mappings"])

    # -- indexing -------------------------------------------------------------------
    @staticmethod
    def document(product: dict[str, Any]) -> dict[str, Any]:
        """The indexed source of one product; numbers go to the cluster as given, which validates them."""
        return {
            "product_id": str(product["product_id"]),
            "contents": searchable_text(product),
            "shop_id": str(product["shop_id"]),
            "service": list(product.get("service") or []),
            "price": product["price"],
            "sold_count": product.get("sold_count") or 0,
            "doc": product,
        }

    def _actions(self, products: Iterable[dict[str, Any]], failures: list[tuple[str, str]]) -> Iterator[dict]:
        for i, product in enumerate(products):
            try:
                source = self.document(product)
            except (KeyError, TypeError, AttributeError) as exc:  # not a product record: report, go on
                pid = str(product.get("product_id", f"#{i}")) if isinstance(product, dict) else f"#{i}"
                failures.append((pid, f"invalid product record: {type(exc).__name__}: {exc}"))
                continue
            yield {"_op_type": "index", "_index": self.index, "_id": source["product_id"], "_source": source}

    def index_products(self, products: Iterable[dict[str, Any]]) -> int:
        """Bulk-index products; raises IndexingError naming the failed products after indexing the rest."""
        failures: list[tuple[str, str]] = []
        indexed = 0
        for ok, item in helpers.streaming_bulk(
            self.client,
            self._actions(products, failures),
            chunk_size=BULK_CHUNK_SIZE,
            raise_on_error=False,
            max_retries=3,
            initial_backoff=1,
        ):
            if ok:
                indexed += 1
            else:
                info = next(iter(item.values())) if item else {}
                failures.append((str(info.get("_id", "?")), _reason(info.get("error", info))))
        if failures:
            raise IndexingError(failures, indexed)
        return indexed

    def commit(self) -> None:
        if self._after_bulk is not None:  # the bulk load is over: serving settings, replicas built from it
            self.client.indices.put_settings(index=self.index, settings={"index": self._after_bulk})
            self._after_bulk = None
        if self.refresh_on_commit:
            self.client.indices.refresh(index=self.index)

    # -- querying -------------------------------------------------------------------
    @staticmethod
    def text_query(terms: Sequence[str], require_all: bool) -> dict[str, Any]:
        clauses = [{"term": {"contents": t}} for t in terms]
        if require_all:
            return {"bool": {"must": clauses}}
        return {"bool": {"should": clauses, "minimum_should_match": 1}}

    @staticmethod
    def filter_clauses(request: SearchRequest) -> list[dict[str, Any]]:
        clauses: list[dict[str, Any]] = []
        if request.shop_id is not None:
            clauses.append({"term": {"shop_id": request.shop_id}})
        if request.price_min is not None or request.price_max is not None:
            bounds: dict[str, float] = {}
            if request.price_min is not None:
                bounds["gte"] = float(request.price_min)
            if request.price_max is not None:
                bounds["lte"] = float(request.price_max)
            clauses.append({"range": {"price": bounds}})
        for s in request.services:
            clauses.append({"term": {"service": s}})
        return clauses

    def build_query(self, request: SearchRequest) -> dict[str, Any]:
        text = self.text_query(request.terms, request.require_all_terms)
        filters = self.filter_clauses(request)
        excluded = [self.text_query(request.terms, True)] if request.exclude_all_terms else []
        if not filters and not excluded:
            return text
        query: dict[str, Any] = {"must": [text]}
        if filters:
            query["filter"] = filters
        if excluded:
            query["must_not"] = excluded
        return {"bool": query}

    def build_search_body(self, request: SearchRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": self.build_query(request),
            "from": request.offset,
            "size": request.page_size,
            "track_total_hits": True,
            "_source": ["doc"],
        }
        if request.sort in _SORT:
            body["sort"] = _SORT[request.sort]
        return body

    def search(self, request: SearchRequest) -> SearchPage:
        if not request.terms:
            return SearchPage(hits=[], total=0, request=request)
        result = self.client.search(index=self.index, **self.build_search_body(request))
        hits = []
        for h in result["hits"]["hits"]:
            product = h["_source"]["doc"]
            score = float(h["_score"] or 0.0) if request.sort == SortOrder.default else 0.0
            hits.append(SearchHit(product_id=str(product["product_id"]), score=score, product=product))
        total = result["hits"]["total"]
        return SearchPage(hits=hits, total=int(total["value"] if isinstance(total, dict) else total), request=request)

    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(str(i) for i in product_ids))
        if not ids:
            return {}
        result = self.client.mget(index=self.index, ids=ids, source=["doc"])
        out: dict[str, dict[str, Any]] = {}
        for d in result["docs"]:
            if d.get("found"):
                product = d["_source"]["doc"]
                out[str(product["product_id"])] = product
        return out

    def count(self) -> int:
        return int(self.client.count(index=self.index)["count"])

    def close(self) -> None:
        self.client.close()
