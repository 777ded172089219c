"""Real Pyserini timed beside shoplab: indexing cost, and the same queries through both, in one run.

For each sandbox (built by bench_build.py, e.g. sb_200000 and sb_2500000):

1. **Indexing.** The catalogue exported as upstream's documents and indexed by Pyserini 1.0.0 exactly as
   ShoppingBench does (`peer_lucene.index_command`: Anserini, one thread, positions, doc vectors, raw
   documents), timed, with the indexer's peak RSS (the JVM and its Python launcher, polled). Beside it,
   shoplab's own build of the same catalogue, from the sandbox's manifest and `results/build.json`.
2. **Queries.** The peer check's query set (`peer_lucene.make_queries`: relevance, filtered, sorted, sorted
   + filtered; gold titles, their fragments and the tasks' own queries), each answered in turn by
   Pyserini with upstream's server rules (100,000 hits, post-filtering, first 50 kept, paging), by
   shoplab's `shoppingbench` profile and by its `shoplab` profile (both `ShoppingEnv.step` end to end), so
   the three share the machine's load. p50/p99 per mode and side, and the ratios.

Pyserini loads the stored document of every hit up to 100,000, so at 2.5M products it takes seconds per
query: `--peer-every K` times it on every K-th query only (shoplab's sides answer all of them).

    .venv/bin/python benchmarks/bench_peer_lucene.py --data-dirs benchmarks/work/sb_200000 \\
        --data-dirs benchmarks/work/sb_2500000 --peer-every 1 --peer-every 5

Needs the `peer` extra (real Pyserini and a Java 21 runtime; `make install` has it). Prints one JSON line and
writes benchmarks/results/peer_lucene_timing.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import peer_lucene  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODES = peer_lucene.MODES


def index_with_pyserini(world: Any, work: Path) -> dict[str, Any]:
    """Export and index as the peer check does (`peer_lucene`), with the indexer's peak RSS."""
    docs_folder, index_dir = work / "docs", work / "index"
    started = time.perf_counter()
    peer_lucene.export_documents(world, docs_folder)
    export_seconds = time.perf_counter() - started
    cost = peer_lucene.build_pyserini_index(docs_folder, index_dir, log=work / "index.log")
    size = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    return {"index_dir": str(index_dir), "export_seconds": round(export_seconds, 1),
            "index_seconds": round(cost["seconds"], 1), "peak_rss_mb": round(cost["peak_rss_mb"], 1),
            "index_size_mb": round(size / 2**20, 1)}


def shoplab_build_cost(data_dir: Path) -> dict[str, Any]:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    out: dict[str, Any] = {"build_seconds": manifest.get("seconds"), "n_products": manifest.get("n_products")}
    builds = RESULTS / "build.json"
    if builds.exists():
        for row in json.loads(builds.read_text()).get("builds", {}).values():
            if Path(row.get("data_dir", "")).resolve() == data_dir.resolve():
                out.update({k: row.get(k) for k in ("seconds_build", "cpu_seconds", "peak_rss_mb", "peak_tree_pss_mb",
                                                     "index_size_mb")})
    index = data_dir / "index"
    out["index_size_mb"] = round(sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) / 2**20, 1)
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(peer_lucene._percentile(values, 50), 3),
            "p99_ms": round(peer_lucene._percentile(values, 99), 3), "mean_ms": round(statistics.fmean(values), 3)}


def time_queries(world: Any, shop: peer_lucene.PyseriniShop, queries: list[dict[str, Any]], peer_every: int,
                 warmup: int) -> dict[str, Any]:
    from sandbox import ShoppingEnv

    envs = {"shoppingbench": ShoppingEnv(world, profile="shoppingbench"),
            "shoplab": ShoppingEnv(world, profile="shoplab")}
    for q in queries[:warmup]:  # the JVM's JIT, the index caches, the page cache
        shop.find_product(**peer_lucene._server_args(q["args"]))
        for env in envs.values():
            env.reset()
            env.step("find_product", q["args"])
    times: dict[str, dict[str, list[float]]] = {side: {m: [] for m in MODES} for side in ("pyserini", *envs)}
    for i, q in enumerate(queries):
        if i % peer_every == 0:
            t0 = time.perf_counter()
            shop.find_product(**peer_lucene._server_args(q["args"]))
            times["pyserini"][q["mode"]].append((time.perf_counter() - t0) * 1000)
        for name, env in envs.items():
            env.reset()
            t0 = time.perf_counter()
            env.step("find_product", q["args"])
            times[name][q["mode"]].append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {}
    for side, by_mode in times.items():
        out[side] = {m: _stats(v) for m, v in by_mode.items()}
        out[side]["all"] = _stats([x for v in by_mode.values() for x in v])
    for name in envs:
        out[f"pyserini_over_{name}"] = {
            m: {k: round(out["pyserini"][m][k] / out[name][m][k], 1) for k in ("p50_ms", "p99_ms")}
            for m in [*MODES, "all"] if out["pyserini"][m].get("n") and out[name][m].get("n")}
    return out


def main(
    data_dirs: list[Path] = typer.Option(..., help="Built sandboxes (bench_build.py's sb_<size>)."),
    peer_every: list[int] = typer.Option([1], help="Per data dir: time Pyserini on every K-th query only."),
    n: int = typer.Option(600, help="Queries (split evenly over the four modes)."),
    seed: int = typer.Option(0),
    warmup: int = typer.Option(20),
    reuse_index: bool = typer.Option(False, help="Reuse a Pyserini index already in <data-dir>/peer_timing."),
    out: Path = typer.Option(RESULTS / "peer_lucene_timing.json"),
) -> None:
    reason = peer_lucene.peer_unavailable()
    if reason:
        print(json.dumps({"benchmark": "peer_lucene_timing", "error": reason}))
        raise typer.Exit(2)
    from sandbox import ShoppingWorld

    every = (peer_every * len(data_dirs))[: len(data_dirs)] if len(peer_every) == 1 else peer_every
    report: dict[str, Any] = {"benchmark": "peer_lucene_timing", "pyserini": peer_lucene.pyserini_version(),
                              "machine": {"cpus": os.cpu_count()}, "sizes": {}}
    for data_dir, k in zip(data_dirs, every, strict=True):
        world = ShoppingWorld.open(data_dir)
        try:
            work = data_dir / "peer_timing"
            if reuse_index and (work / "index").is_dir():
                index = {"index_dir": str(work / "index"), "reused": True}
            else:
                print(f"{data_dir}: exporting and indexing with Pyserini ...", file=sys.stderr, flush=True)
                index = index_with_pyserini(world, work)
            print(f"{data_dir}: {index}", file=sys.stderr, flush=True)
            shop = peer_lucene.PyseriniShop(index["index_dir"])
            queries = peer_lucene.make_queries(world, n=n, seed=seed)
            load = os.getloadavg()
            started = time.perf_counter()
            latency = time_queries(world, shop, queries, k, warmup)
            report["sizes"][str(world.manifest["n_products"])] = {
                "data_dir": str(data_dir), "pyserini_index": index, "shoplab_build": shoplab_build_cost(data_dir),
                "n_queries": len(queries), "peer_every": k, "latency": latency,
                "seconds": round(time.perf_counter() - started, 1),
                "loadavg": [round(x, 2) for x in load], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        finally:
            world.close()
    report["captured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    typer.run(main)
