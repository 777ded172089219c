"""Per-product CPU cost of each build step, and of drop-in faster variants (checked to give identical output).

    .venv/bin/python benchmarks/probe_build_costs.py --n 50000

Variants (not in the sandbox package; suggestions for it):
  searchable_text_fast  analyze() that skips NFKC for ASCII text and the utf-8 length check for short tokens
  orjson_dumps          orjson.dumps(product) instead of json.dumps(..., ensure_ascii=False, separators=(",", ":"))
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import tantivy  # noqa: E402

from sandbox.catalogue.generator import FillerGenerator  # noqa: E402
from sandbox.catalogue.profile import learn_profile  # noqa: E402
from sandbox.engines.base import (  # noqa: E402
    MAX_TOKEN_BYTES,
    searchable_raw_text,
    searchable_text,
)
from sandbox.engines.tantivy_backend import TantivyBackend  # noqa: E402
from sandbox.tasks import load_tasks  # noqa: E402

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def analyze_fast(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    return [t for t in _TOKEN.findall(text)
            if len(t) <= MAX_TOKEN_BYTES // 4 or len(t.encode("utf-8")) <= MAX_TOKEN_BYTES]


def stdlib_stored_json(product) -> str:
    """The stored-document encoder before the switch to orjson: the baseline this probe measured."""
    return json.dumps(product, ensure_ascii=False, separators=(",", ":"))


def searchable_text_fast(product):
    return " ".join(analyze_fast(searchable_raw_text(product)))


def per_item_us(fn, items) -> float:
    t0 = time.process_time()
    for it in items:
        fn(it)
    return round((time.process_time() - t0) / len(items) * 1e6, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    args = ap.parse_args()
    tasks = load_tasks(sorted((ROOT / "data" / "shoppingbench").glob("*.jsonl")))
    profile = learn_profile(tasks)
    gen = FillerGenerator(profile, 0, 2_500_000)
    res: dict = {"n": args.n, "loadavg_start": [round(x, 2) for x in os.getloadavg()], "unit": "CPU microseconds per product"}
    t0 = time.process_time()
    products = list(gen.stream(args.n))
    res["generate_make"] = round((time.process_time() - t0) / args.n * 1e6, 2)
    assert all(searchable_text(p) == searchable_text_fast(p) for p in products)
    assert all(stdlib_stored_json(p).encode() == orjson.dumps(p) for p in products)
    be = TantivyBackend(Path(args.work_dir) / "probe_costs_idx", create=True)
    res["searchable_text"] = per_item_us(searchable_text, products)
    res["searchable_text_fast"] = per_item_us(searchable_text_fast, products)
    res["json_dumps"] = per_item_us(lambda p: stdlib_stored_json(p).encode("utf-8"), products)
    res["orjson_dumps"] = per_item_us(orjson.dumps, products)
    res["_document_total"] = per_item_us(be._document, products)
    texts = [searchable_text(p) for p in products]
    blobs = [orjson.dumps(p) for p in products]

    def doc_only(i):
        p = products[i]
        d = tantivy.Document()
        d.add_text("product_id", p["product_id"])
        d.add_text("contents", texts[i])
        d.add_text("shop_id", p["shop_id"])
        for s in p["service"]:
            d.add_text("service", s)
        d.add_float("price", float(p["price"]))
        d.add_integer("sold_count", int(p["sold_count"]))
        d.add_bytes("doc", blobs[i])
        return d

    res["tantivy_Document_build_only"] = per_item_us(doc_only, range(len(products)))
    docs = [doc_only(i) for i in range(len(products))]
    w = be.index.writer(heap_size=1_000_000_000, num_threads=2)
    t0 = time.process_time()
    for d in docs:
        w.add_document(d)
    res["add_document_main_thread"] = round((time.process_time() - t0) / args.n * 1e6, 2)  # process CPU incl. indexer threads so far
    t0w = time.perf_counter()
    w.commit()
    w.wait_merging_threads()
    res["commit_seconds"] = round(time.perf_counter() - t0w, 2)
    be.close()
    import shutil
    shutil.rmtree(Path(args.work_dir) / "probe_costs_idx", ignore_errors=True)
    cur = res["generate_make"] + res["_document_total"] + res["add_document_main_thread"]
    fast = cur - (res["searchable_text"] - res["searchable_text_fast"]) - (res["json_dumps"] - res["orjson_dumps"])
    res["estimated_main_thread_us_now"] = round(cur, 1)
    res["estimated_main_thread_us_with_both_fixes"] = round(fast, 1)
    res["estimated_2_5M_seconds_now"] = round(cur * 2.5, 1)
    res["estimated_2_5M_seconds_with_both_fixes"] = round(fast * 2.5, 1)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (ROOT / "benchmarks" / "results" / "probe_build_costs.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
