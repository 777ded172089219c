"""Does build memory grow with N, and where? Python-side generation alone vs tantivy indexing with a given heap.

    .venv/bin/python benchmarks/probe_build_memory.py --n 1000000 --heap-mb 128

Phase 1 streams N filler products through FillerGenerator + searchable_text + json (no index) and records RSS.
Phase 2 (separate subprocess, fresh RSS) indexes the same stream into a throwaway TantivyBackend with
heap_size=--heap-mb and records peak RSS, time, and segment count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stream(n):
    from sandbox.catalogue.generator import FillerGenerator
    from sandbox.catalogue.profile import learn_profile
    from sandbox.tasks import load_tasks

    profile = learn_profile(load_tasks(sorted((ROOT / "data" / "shoppingbench").glob("*.jsonl"))))
    return FillerGenerator(profile, 0, n).stream(n)


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def phase(kind: str, n: int, heap_mb: int, work: Path) -> dict:
    import orjson

    from sandbox.engines.base import searchable_text
    samples = []
    stop = threading.Event()

    def sampler():
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((round(time.perf_counter() - t0, 1), round(rss_mb(), 1)))
            stop.wait(1.0)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out: dict = {"phase": kind, "n": n}
    if kind == "generate":
        for p in stream(n):
            searchable_text(p)
            orjson.dumps(p)  # the stored document, as the tantivy backend writes it
    else:
        from sandbox.engines.tantivy_backend import TantivyBackend
        path = work / "probe_mem_idx"
        be = TantivyBackend(path, create=True, heap_size=heap_mb * 2**20)
        batch = []
        for p in stream(n):
            batch.append(p)
            if len(batch) >= 5000:
                be.index_products(batch)
                batch = []
        be.index_products(batch)
        be.commit()
        out["segments"] = len(json.loads((path / "meta.json").read_text())["segments"])
        out["heap_mb"] = heap_mb
        be.close()
        shutil.rmtree(path, ignore_errors=True)
    stop.set()
    th.join()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    step = max(1, len(samples) // 15)
    out["rss_timeline"] = samples[::step]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--heap-mb", type=int, default=128)
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--phase", choices=["generate", "index"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work_dir)
    if args.phase:
        print(json.dumps(phase(args.phase, args.n, args.heap_mb, work)))
        return
    res = {"loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    for kind in ("generate", "index"):
        r = subprocess.run([sys.executable, __file__, "--phase", kind, "--n", str(args.n), "--heap-mb",
                            str(args.heap_mb), "--work-dir", str(work)], capture_output=True, text=True, check=True)
        res[kind] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {kind}: {res[kind]}", file=sys.stderr, flush=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "benchmarks" / "results" / f"probe_build_memory_{args.n}_heap{args.heap_mb}.json"
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "rss_timeline"} if isinstance(v, dict) else v)
                      for k, v in res.items()}))


if __name__ == "__main__":
    main()
