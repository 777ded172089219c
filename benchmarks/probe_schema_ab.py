"""A/B of the tantivy schema's `product_id` field: fast=True (current code) vs fast=False (schema before 06:52).

Each variant indexes the same N generated products in a fresh subprocess (build loop of build_sandbox, via
TantivyBackend with `build_schema` patched for the B variant) and reports wall s, CPU s, peak RSS, index MB.

    .venv/bin/python benchmarks/probe_schema_ab.py --n 500000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(variant: str, n: int, work: Path) -> dict:
    import sandbox.engines.tantivy_backend as tb
    from sandbox.catalogue.generator import FillerGenerator
    from sandbox.catalogue.profile import learn_profile
    from sandbox.tasks import load_tasks

    if variant == "product_id_not_fast":
        tb.build_schema = functools.partial(tb.build_schema, product_id_fast=False)
    profile = learn_profile(load_tasks(sorted((ROOT / "data" / "shoppingbench").glob("*.jsonl"))))
    products = list(FillerGenerator(profile, 0, n).stream(n))  # generated up front: not part of the timing
    path = work / f"probe_ab_{variant}"
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    be = tb.TantivyBackend(path, create=True)
    for i in range(0, n, 5000):
        be.index_products(products[i:i + 5000])
    t_add = time.perf_counter() - t0
    be.commit()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    be.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"variant": variant, "n": n, "seconds": round(wall, 2), "add_seconds": round(t_add, 2),
            "commit_seconds": round(wall - t_add, 2),
            "cpu_seconds": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 2),
            "peak_rss_mb_incl_products_in_memory": round(r1.ru_maxrss / 1024, 1), "index_mb": round(size, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work_dir)
    if args.variant:
        print(json.dumps(run(args.variant, args.n, work)))
        return
    res = {"loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    for v in ("product_id_not_fast", "product_id_fast", "product_id_not_fast", "product_id_fast"):
        out = subprocess.run([sys.executable, __file__, "--variant", v, "--n", str(args.n), "--work-dir", str(work)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        res.setdefault(v, []).append(r)
        print(f"  {r}", file=sys.stderr, flush=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (ROOT / "benchmarks" / "results" / f"probe_schema_ab_{args.n}.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
