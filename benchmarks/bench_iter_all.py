"""Reading a whole catalogue back (`TantivyBackend.iter_all`: export, the dense index, re-indexing).

For each sandbox, in one process: the current method (two linear passes over the stored records) over every
product, then the previous method (paging a product-id-sorted query with an offset, `_iter_all_paged`)
until it has given every product or `--old-timeout` seconds have passed; both must give the same products
in the same order as far as the previous one got.

    .venv/bin/python benchmarks/bench_iter_all.py --data-dirs benchmarks/work/sb_200000 \
        benchmarks/work/sb_2500000 --old-timeout 600

Prints one JSON line and writes benchmarks/results/iter_all.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.world import ShoppingWorld  # noqa: E402


def run(data_dir: Path, old_timeout: float) -> dict[str, Any]:
    world = ShoppingWorld.open(data_dir)
    backend = world.backend
    res: dict[str, Any] = {"n_products": backend.count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    started, cpu0 = time.perf_counter(), time.process_time()
    new_ids = [p["product_id"] for p in backend.iter_all()]
    res["current"] = {"seconds": round(time.perf_counter() - started, 2),
                      "cpu_seconds": round(time.process_time() - cpu0, 2), "products": len(new_ids),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"  [{data_dir.name}] current: {res['current']}", file=sys.stderr, flush=True)
    started, cpu0 = time.perf_counter(), time.process_time()
    old_ids: list[str] = []
    for p in backend._iter_all_paged():
        old_ids.append(p["product_id"])
        if len(old_ids) % 1000 == 0 and time.perf_counter() - started > old_timeout:
            break
    seconds = time.perf_counter() - started
    res["previous"] = {"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
                       "products": len(old_ids), "finished": len(old_ids) == len(new_ids)}
    res["same_order_as_far_as_previous_got"] = new_ids[:len(old_ids)] == old_ids
    res["products_per_second"] = {"current": round(len(new_ids) / res["current"]["seconds"]),
                                  "previous": round(len(old_ids) / max(seconds, 1e-9))}
    print(f"  [{data_dir.name}] previous: {res['previous']}", file=sys.stderr, flush=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    world.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dirs", nargs="+", required=True)
    ap.add_argument("--old-timeout", type=float, default=600.0,
                    help="stop the previous method after this many seconds (it is quadratic)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "iter_all.json"))
    args = ap.parse_args()
    results = {Path(d).name: run(Path(d), args.old_timeout) for d in args.data_dirs}
    payload = {"benchmark": "iter_all", "command": "python benchmarks/bench_iter_all.py " + " ".join(sys.argv[1:]),
               "results": results}
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(json.dumps({k: {"current_s": v["current"]["seconds"], "previous_s": v["previous"]["seconds"],
                          "previous_products": v["previous"]["products"],
                          "same": v["same_order_as_far_as_previous_got"]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
