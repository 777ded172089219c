"""Print the markdown results tables for benchmarks/README.md from results/build.json and results/search.json.

    .venv/bin/python benchmarks/make_table.py [--build FILE] [--search FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RES = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(RES / "build.json"))
    ap.add_argument("--search", default=str(RES / "search.json"))
    args = ap.parse_args()
    b = json.loads(Path(args.build).read_text())
    print(f"Build — `{b['command']}`\n")
    print("| products | build s | products/s | CPU s (user+sys) | peak RSS MB | index MB | segments | load avg (1/5/15 min) at start |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, r in b["builds"].items():
        cpu = (r["cpu_seconds_user"] or 0) + (r["cpu_seconds_system"] or 0)
        print(f"| {int(n):,} | {r['seconds_build']} | {r['products_per_second']:,.0f} | {cpu:.0f} | {r['peak_rss_mb']} | "
              f"{r['index_size_mb']} | {r['index_segments']} | {' / '.join(map(str, r['loadavg_before']))} |")
    s = json.loads(Path(args.search).read_text())
    print(f"\nSearch — `{s['command']}` (ms; p50 / p95 / p99)\n")
    sizes = list(s["sizes"])
    print("| mode | " + " | ".join(f"{int(n):,}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    modes = ["relevance", "filtered", "sorted", "baseline_filtered", "baseline_sorted", "env_find_product",
             "env_find_product_search_only", "env_find_product_overhead", "env_calculate", "env_view_cart"]
    for m in modes:
        cells = []
        for n in sizes:
            r = s["sizes"][n][m]
            cells.append(f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} (n={r['n']}, {r['qps']:,.0f} qps)")
        print(f"| {m} | " + " | ".join(cells) + " |")
    for key, label in [("filtered", "speedup filtered vs baseline (p50 / p99)"),
                       ("sorted", "speedup sorted vs baseline (p50 / p99)")]:
        cells = [f"{s['sizes'][n]['speedup'][key + '_p50']}× / {s['sizes'][n]['speedup'][key + '_p99']}×" for n in sizes]
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = [f"{' / '.join(map(str, s['sizes'][n]['loadavg_start']))} → {' / '.join(map(str, s['sizes'][n]['loadavg_end']))}"
             for n in sizes]
    print("| load avg start → end | " + " | ".join(cells) + " |")
    cells = [str(s["sizes"][n]["baseline_filtered"]["same_page_as_engine"]) for n in sizes]
    print("| baseline page == engine page | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
