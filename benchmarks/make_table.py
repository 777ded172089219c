"""Print the markdown results tables for benchmarks/README.md from results/build.json, results/search.json,
results/peer_lucene_timing.json and results/es_bulk.json (the last two when present).

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
    print("| products | build s | CPU s (all processes) | peak RSS MB (anonymous / file-backed) | tree PSS MB | "
          "index MB | segments | previous code: s, CPU s, peak RSS MB | speedup | load at start |")
    print("|---:|---:|---:|---|---:|---:|---:|---|---:|---|")
    for n, r in b["builds"].items():
        base = r.get("baseline")
        before = f"{base['seconds_build']}, {base['cpu_seconds']}, {base['peak_rss_mb']}" if base else "—"
        speedup = f"{r['speedup_vs_baseline']}×" if base else "—"
        split = (f" ({r['peak_anon_mb_polled']:.0f} / {r['peak_file_mb_polled']:.0f})"
                 if "peak_anon_mb_polled" in r else "")
        print(f"| {int(n):,} | {r['seconds_build']} | {r['cpu_seconds']} | {r['peak_rss_mb']}{split} | "
              f"{r['peak_tree_pss_mb']} | {r['index_size_mb']} | {r['index_segments']} | {before} | {speedup} | "
              f"{' / '.join(map(str, r['loadavg_before']))} |")
    s = json.loads(Path(args.search).read_text())
    print(f"\nSearch — `{s['command']}` (ms; p50 / p95 / p99)\n")
    sizes = list(s["sizes"])
    print("| mode | " + " | ".join(f"{int(n):,}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    modes = ["relevance", "relevance_unplanned", "filtered", "filtered_unplanned", "sorted", "sorted_unplanned",
             "baseline_filtered", "baseline_sorted", "env_find_product",
             "env_find_product_search_only", "env_find_product_overhead", "env_calculate", "env_view_cart"]
    for m in modes:
        cells = []
        for n in sizes:
            r = s["sizes"][n].get(m)
            if r is None:  # measured before the mode existed
                cells.append("—")
                continue
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
    cells = [" / ".join(s["sizes"][n][m]["same_page_and_total_as_planned"] for m in
                        ("relevance_unplanned", "filtered_unplanned", "sorted_unplanned"))
             if "filtered_unplanned" in s["sizes"][n] else "—" for n in sizes]
    print("| planned == unplanned, page and total (relevance / filtered / sorted) | " + " | ".join(cells) + " |")
    peer_table(RES / "peer_lucene_timing.json")
    es_table(RES / "es_bulk.json")
    filtered_plans_table(RES / "probe_filtered_plans_2500000.json")


def peer_table(path: Path) -> None:
    if not path.exists():
        return
    p = json.loads(path.read_text())
    print(f"\nReal Pyserini {p['pyserini']} beside shoplab — `benchmarks/bench_peer_lucene.py` (ms, p50 / p99, n)\n")
    print("| products | side | relevance | filtered | sorted | sorted + filtered | all |")
    print("|---:|---|---|---|---|---|---|")
    for n, r in p["sizes"].items():
        for side in ("pyserini", "shoppingbench", "shoplab"):
            cells = [f"{v['p50_ms']} / {v['p99_ms']} ({v['n']})" if v.get("n") else "—"
                     for v in (r["latency"][side][m] for m in ("relevance", "filtered", "sorted", "sorted_filtered",
                                                                "all"))]
            label = {"pyserini": "Pyserini (upstream's server)", "shoppingbench": "shoplab, `shoppingbench` profile",
                     "shoplab": "shoplab, `shoplab` profile"}[side]
            print(f"| {int(n):,} | {label} | " + " | ".join(cells) + " |")
        for side in ("shoppingbench", "shoplab"):
            ratio = r["latency"].get(f"pyserini_over_{side}", {})
            cells = [f"{ratio[m]['p50_ms']}× / {ratio[m]['p99_ms']}×" if m in ratio else "—"
                     for m in ("relevance", "filtered", "sorted", "sorted_filtered", "all")]
            print(f"| {int(n):,} | Pyserini ÷ `{side}` | " + " | ".join(cells) + " |")
    print("\n| products | Pyserini: export s, index s, peak RSS MB, index MB | shoplab build: s, CPU s, peak RSS MB, "
          "index MB (both profiles) |")
    print("|---:|---|---|")
    for n, r in p["sizes"].items():
        i, b = r["pyserini_index"], r["shoplab_build"]
        print(f"| {int(n):,} | {i.get('export_seconds')}, {i.get('index_seconds')}, {i.get('peak_rss_mb')}, "
              f"{i.get('index_size_mb')} | {b.get('seconds_build', b.get('build_seconds'))}, {b.get('cpu_seconds')}, "
              f"{b.get('peak_rss_mb')}, {b.get('index_size_mb')} |")


def es_table(path: Path) -> None:
    if not path.exists():
        return
    e = json.loads(path.read_text())
    print(f"\nElasticsearch bulk ingestion — `benchmarks/bench_es_bulk.py` against {e['server']}\n")
    print("| products | refresh during load | bulk s | documents/s | commit s | client peak RSS MB | "
          "server peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in e["runs"]:
        print(f"| {r['n']:,} | {'off (-1)' if r['bulk_settings'] else '1 s'} | {r['bulk_seconds']} | "
              f"{r['docs_per_second']:,.0f} | {r['commit_seconds']} | {r['client_peak_rss_mb']} | "
              f"{r['server_peak_rss_mb']} |")


def filtered_plans_table(path: Path) -> None:
    """`probe_filtered_plans.py`: exact plans for the filtered some-terms query, beside the plain query."""
    if not path.exists():
        return
    p = json.loads(path.read_text())
    labels = {"plain": "plain: Must(any word) + filters scoring 0",
              "filters_as_postings": "filters as boosted postings in one disjunction (block-max WAND), rescored exactly",
              "two_shards_threads": "two catalogue halves in two threads, pages merged",
              "halves_one_thread": "the same two halves one after the other"}
    print(f"\nFiltered some-terms plans — `benchmarks/probe_filtered_plans.py`, {p['n_products']:,} products (ms)\n")
    print("| plan | p50 | p95 | p99 | same page as plain |")
    print("|---|---:|---:|---:|---|")
    for key, label in labels.items():
        if key in p:
            r = p[key]
            print(f"| {label} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r.get('same_page_as_plain', '—')} |")


if __name__ == "__main__":
    main()
