"""The fast build: word-cached analysis, worker processes, postings spilled to disk.

Each shortcut must give exactly what the plain code gives: the same tokens, the same catalogue in
the same index order, the same saved relevance index."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest
import tantivy

from sandbox.catalogue import build_sandbox, pipeline
from sandbox.engines.base import analyze, analyze_by_word
from sandbox.engines.lucene_bm25 import LuceneBM25Builder, lucene_english_tokens, lucene_terms_of
from tests.conftest import TASK_FILES

# Joiners, combining marks, spaces that are not U+0020 (NBSP, narrow NBSP: a word joiner for UAX #29),
# final sigma, dotted I, Hangul jamo that compose, emoji with modifiers and flags, CJK, Thai, ligatures.
_HOSTILE = list("abcXYZ019 .,:;'’·-_\n\t") + [chr(c) for c in (
    0x301, 0x308, 0xA0, 0x202F, 0x200D, 0x200B, 0x3A3, 0x130, 0xAD, 0x2163, 0xBD, 0x30A2, 0x30FC, 0x4E00, 0x3042,
    0xE01, 0x1F600, 0x1F3FB, 0x1F1FA, 0x1F1F8, 0xFB01, 0x2474, 0xFF21, 0x180E, 0x3000, 0xB4, 0xA8, 0x1100, 0x1161,
    0x11A8)]


def test_word_by_word_analysis_gives_the_tokens_of_the_whole_text():
    rng = random.Random(0)
    texts = ["".join(rng.choice(_HOSTILE) for _ in range(rng.randint(0, 16))) for _ in range(20_000)]
    texts += ["Men's 3.5mm wi-fi 1,000 e.g. ΟΔΟΣ ΟΔΟΣ", "a\u202fb c", "x" * 600 + " y"]
    for text in texts:
        assert analyze_by_word(text) == analyze(text), repr(text)
    lucene = lucene_terms_of(texts)  # what a build worker makes of a chunk: local ids, document by document
    for d, text in enumerate(texts):
        ids = lucene.ids[lucene.offsets[d]: lucene.offsets[d + 1]]
        assert [lucene.terms[i] for i in ids] == lucene_english_tokens(text), repr(text)


def _products(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ["steel", "bottle", "men's", "3.5mm", "wi-fi", "the", "ΟΔΟΣ", "水", "red", "usb-c"]
    words += [f"w{k}" for k in range(400)]  # many terms, so that one pass lays out several
    return [{"product_id": str(10_000 + i), "shop_id": f"s{rng.randrange(7)}", "title": " ".join(
        rng.choice(words) for _ in range(rng.randint(1, 8))), "price": round(rng.uniform(1, 500), 2),
        "sold_count": rng.randrange(100), "service": rng.sample(["official", "COD", "flashsale"], rng.randrange(3)),
        "attributes": {"color": [rng.choice(["red", "blue"])]}, "sku_options": {}} for i in range(n)]


def _saved(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_postings_spilled_to_disk_save_the_same_index_as_in_memory(tmp_path):
    products = _products(3000)
    in_memory, spilled = LuceneBM25Builder(), LuceneBM25Builder(spill_dir=tmp_path / "spill", pass_postings=2000)
    for i in range(0, len(products), 250):  # batches, as the build adds them
        in_memory.add(products[i:i + 250])
        spilled.add(products[i:i + 250])
    assert any((tmp_path / "spill").iterdir())  # the postings really went to disk
    in_memory.save(tmp_path / "a")
    spilled.save(tmp_path / "b")  # several passes of up to 2,000 postings, each over several terms
    assert _saved(tmp_path / "a") == _saved(tmp_path / "b")
    assert not (tmp_path / "spill").exists()  # the spill files are removed once saved


def _stored_docs(data_dir: Path) -> list[bytes]:
    """Every stored record in index (docid) order."""
    index = tantivy.Index.open(str(data_dir / "index" / "tantivy"))
    searcher = index.searcher()
    meta = json.loads((data_dir / "index" / "tantivy" / "meta.json").read_text())
    docs = []
    for ordinal, segment in enumerate(meta["segments"]):
        for doc in range(segment["max_doc"]):
            docs.append(searcher.doc(tantivy.DocAddress(ordinal, doc))["doc"][0])
    return docs


def test_worker_processes_build_the_same_sandbox_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_FILLERS", 1)  # workers even for a small catalogue
    n = 25_000  # three chunks of fillers (CHUNK = 10,000), the last one partial
    build_sandbox(tmp_path / "one", TASK_FILES, n, seed=3, progress=False, workers=1)
    build_sandbox(tmp_path / "two", TASK_FILES, n, seed=3, progress=False, workers=2)
    one, two = _stored_docs(tmp_path / "one"), _stored_docs(tmp_path / "two")
    assert len(one) == n and one == two
    assert _saved(tmp_path / "one" / "index" / "lucene_bm25") == _saved(tmp_path / "two" / "index" / "lucene_bm25")
    assert not any((tmp_path / "two").glob(".lucene_postings"))
    # The stored records are the generator's own products, not a re-encoding that loses a field.
    ids = {orjson.loads(d)["product_id"] for d in two}
    assert len(ids) == n


def test_a_failing_build_stops_its_workers(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(pipeline, "PARALLEL_MIN_FILLERS", 1)

    def refuse(self, rows):
        for _ in rows:
            raise OSError("disk full")

    monkeypatch.setattr("sandbox.engines.tantivy_backend.TantivyBackend.index_prepared", refuse)
    with pytest.raises(OSError, match="disk full"):
        build_sandbox(tmp_path / "sb", TASK_FILES, 25_000, seed=0, progress=False, workers=2)
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "sb").exists()  # and leaves no half-built sandbox


def test_prepared_rows_hold_their_records_at_their_own_size():
    import tracemalloc

    from sandbox.engines.prepared import prepare

    products = _products(2000)
    tracemalloc.start()
    try:
        rows = [prepare(p) for p in products]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    record_bytes = sum(len(r.doc) for r in rows)
    # A chunk of rows lives until it is indexed: its records must cost about their length, not a buffer each.
    assert held < 4 * record_bytes + 2_000_000, (held, record_bytes)


def test_a_large_build_commits_so_few_times_that_tantivy_never_merges(tmp_path: Path, monkeypatch):
    """Past MAX_BUILD_SEGMENTS commits' worth of products, a build commits in at most that many larger batches:
    one segment each and no merge (a merge maps every segment it reads: 2.9 GB of RSS in a 10M build)."""
    from sandbox.engines import tantivy_backend
    from tests.es_support import make_test_products

    monkeypatch.setattr(tantivy_backend, "COMMIT_EVERY", 100)  # a "1M" of 100 products
    products = make_test_products(1000, seed=1)
    commit_every, heap_size = tantivy_backend.build_writer_settings(len(products))
    assert commit_every == 143 and heap_size == tantivy_backend.HEAP_PER_COMMIT * 143 // 100
    assert tantivy_backend.build_writer_settings(500) == (100, tantivy_backend.HEAP_PER_COMMIT)  # small: as before

    def segments(every: int) -> int:
        backend = tantivy_backend.TantivyBackend(tmp_path / f"every{every}", create=True, commit_every=every)
        for start in range(0, len(products), 50):
            backend.index_products(products[start:start + 50])
        backend.commit()
        return backend.searcher.num_segments

    assert segments(commit_every) == tantivy_backend.MAX_BUILD_SEGMENTS
    assert segments(100) < 8  # every 100: ten segments, and tantivy merged eight of them


def test_a_build_sizes_tantivys_commits_from_its_product_count(tmp_path: Path, monkeypatch):
    from sandbox.engines import tantivy_backend

    asked, opened = [], []
    monkeypatch.setattr(tantivy_backend, "build_writer_settings", lambda n: asked.append(n) or (123, 64_000_000))
    original_init = tantivy_backend.TantivyBackend.__init__

    def spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        opened.append((self._commit_every, self._heap_size))

    monkeypatch.setattr(tantivy_backend.TantivyBackend, "__init__", spy)
    build_sandbox(tmp_path / "sb", TASK_FILES, 3_000, seed=0, progress=False, workers=1)
    assert asked == [3_000] and opened[0] == (123, 64_000_000)
