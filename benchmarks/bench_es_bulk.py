"""Bulk ingestion into the Elasticsearch backend: throughput and memory, against osmem-server.

osmem-server (an in-memory OpenSearch-compatible server from a wheel; the tests' server) stands in for a
cluster: this machine has no JVM cluster and no network. The client side is the product's own code path
(`ElasticsearchBackend.index_products`: `helpers.streaming_bulk`, BULK_CHUNK_SIZE documents per request),
fed by the sandbox's filler generator, so the figures are the client's and this server's, not a real
cluster's (docs/elasticsearch.md gives the cluster recipe and what to expect there). `--url` measures a
real cluster instead.

Per run: documents/s over the bulk load, the commit (settings back to serving, refresh), the client's
peak RSS and the server's (polled), and the index's count afterwards. `--compare-refresh` also loads the
same products into an index left at a 1 s refresh interval (the setting a build no longer uses).

    .venv/bin/python benchmarks/bench_es_bulk.py --data-dir benchmarks/work/sb_200000 --n 1000000

Prints one JSON line and writes benchmarks/results/es_bulk.json.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _poll_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.5)


def load(url: str, index: str, products: Any, n: int, bulk_settings: bool, osmem: bool,
         api_key: str | None = None) -> dict[str, Any]:
    from sandbox.engines.elasticsearch_backend import ElasticsearchBackend

    node_class = None
    if osmem:
        from tests.es_support import CompatHeadersNode  # osmem answers 406 to the 9.x client's media types

        node_class = CompatHeadersNode
    backend = ElasticsearchBackend(url, index=index, create=True, node_class=node_class, request_timeout=600,
                                   api_key=api_key)
    if not bulk_settings:  # the earlier way: refresh every second while loading
        backend.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": "1s"}})
    started = time.perf_counter()
    indexed = 0
    batch: list[dict[str, Any]] = []
    for product in products:
        batch.append(product)
        if len(batch) >= 50_000:
            indexed += backend.index_products(batch)
            batch = []
            print(f"  {indexed:,} indexed, {indexed / (time.perf_counter() - started):,.0f}/s", file=sys.stderr,
                  flush=True)
    if batch:
        indexed += backend.index_products(batch)
    bulk_seconds = time.perf_counter() - started
    started = time.perf_counter()
    backend.commit()
    commit_seconds = time.perf_counter() - started
    count = backend.count()
    backend.client.indices.delete(index=index)
    return {"n": n, "indexed": indexed, "count_after_commit": count, "bulk_settings": bulk_settings,
            "bulk_seconds": round(bulk_seconds, 1), "docs_per_second": round(indexed / bulk_seconds, 1),
            "commit_seconds": round(commit_seconds, 2)}


def main(
    data_dir: Path = typer.Option(..., help="A built sandbox: its catalogue profile and seed make the products."),
    n: int = typer.Option(1_000_000, help="Products to bulk-load."),
    compare_refresh: bool = typer.Option(False, help="Also load with a 1 s refresh interval during the load."),
    url: str | None = typer.Option(None, help="A real cluster instead of osmem-server (its index "
                                   "shoplab-bulk-bench is created and deleted)."),
    api_key: str | None = typer.Option(None, envvar="SHOPLAB_ES_API_KEY"),
    out: Path = typer.Option(ROOT / "benchmarks" / "results" / "es_bulk.json"),
) -> None:
    from osmem_server import OsmemServer

    from sandbox.catalogue.generator import FillerGenerator
    from sandbox.catalogue.profile import CatalogueProfile

    manifest = json.loads((data_dir / "manifest.json").read_text())
    profile = CatalogueProfile.from_json(data_dir / "profile.json")

    def products():
        return FillerGenerator(profile, int(manifest["seed"]), n).stream(n)

    server = OsmemServer.start(freeze=False, japanese=False) if url is None else None
    runs = []
    try:
        for bulk_settings in ([True, False] if compare_refresh else [True]):
            stop, server_peak, client_peak = threading.Event(), [0], [0]
            pollers = [threading.Thread(target=_poll_rss, args=(os.getpid(), stop, client_peak), daemon=True)]
            if server is not None:
                pollers.append(threading.Thread(target=_poll_rss, args=(server.pid, stop, server_peak), daemon=True))
            for t in pollers:
                t.start()
            try:
                run = load(url or server.url, "shoplab-bulk-bench", products(), n, bulk_settings, osmem=server is not None,
                           api_key=api_key)
            finally:
                stop.set()
            run["server_peak_rss_mb"] = round(server_peak[0] / 2**20, 1) if server is not None else None
            run["client_peak_rss_mb"] = round(client_peak[0] / 2**20, 1)
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.close()
    report = {"benchmark": "es_bulk", "server": f"osmem-server {server.version}" if server else url, "n": n,
              "client_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "runs": runs, "loadavg": [round(x, 2) for x in os.getloadavg()],
              "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    typer.run(main)
