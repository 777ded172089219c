"""`TantivyBackend.iter_all`: every product once, in product-id order, in linear time.

Export, the dense index and the `shoppingbench` profile's lazily built index read the catalogue through it,
and the last one breaks BM25 ties by the order it gets: the order must stay what paging a product-id-sorted
query gave (`_iter_all_paged`, the previous method), across segments, page sizes and non-ASCII ids.
"""

from __future__ import annotations

from typing import Any

import pytest
import tantivy

from sandbox.engines.tantivy_backend import TantivyBackend
from tests.es_support import make_test_products


def _products() -> list[dict[str, Any]]:
    products = make_test_products(900, seed=11)
    # Ids of several lengths and scripts: the order is byte order (a prefix first, "é" after "z").
    for p, pid in zip(products[:6], ("9", "90", "zz-1", "é-1", "Ω2", "10000000000"), strict=True):
        p["product_id"] = pid
    return products


def _backend(path, products: list[dict[str, Any]]) -> TantivyBackend:
    backend = TantivyBackend(path, create=True)
    for start in range(0, len(products), 250):  # several segments, in an order unrelated to the ids
        backend.index_products(products[start:start + 250])
        backend._writer.commit()
    backend.commit()
    return backend


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> TantivyBackend:
    return _backend(tmp_path_factory.mktemp("iter_all") / "tantivy", _products())


@pytest.mark.parametrize("batch", [7, 50_000])
def test_iter_all_gives_every_product_once_in_the_paged_order(backend: TantivyBackend, batch: int) -> None:
    assert backend.searcher.num_segments > 1
    got = [p["product_id"] for p in backend.iter_all(batch)]
    assert got == [p["product_id"] for p in backend._iter_all_paged(batch)]
    assert sorted(got) == sorted(p["product_id"] for p in _products())  # each once
    assert got == sorted(got, key=lambda i: i.encode())  # byte order of the ids
    assert got.index("9") < got.index("90") < got.index("zz-1") < got.index("é-1") < got.index("Ω2")


def test_iter_all_reads_the_whole_stored_record(backend: TantivyBackend) -> None:
    by_id = {p["product_id"]: p for p in _products()}
    for p in backend.iter_all():
        assert p["title"] == by_id[p["product_id"]]["title"]
        assert p["price"] == pytest.approx(by_id[p["product_id"]]["price"])


def test_iter_all_skips_deleted_products(tmp_path) -> None:
    """A deleted document's record stays in the store until a merge: the store alone would return it."""
    products = _products()[:300]
    backend = _backend(tmp_path / "tantivy", products)
    writer = backend.index.writer(heap_size=50_000_000, num_threads=1)
    writer.delete_documents_by_term("product_id", "90")
    writer.commit()
    writer.wait_merging_threads()
    backend.index.reload()
    backend._searcher = None
    got = [p["product_id"] for p in backend.iter_all()]
    assert "90" not in got
    assert len(got) == len(products) - 1
    assert got == [p["product_id"] for p in backend._iter_all_paged()]


def test_iter_all_of_an_empty_index(tmp_path) -> None:
    backend = TantivyBackend(tmp_path / "tantivy", create=True)
    backend.commit()
    assert list(backend.iter_all()) == []
    assert isinstance(backend.searcher, tantivy.Searcher)
