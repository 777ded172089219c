"""Where does build time go? Stage-by-stage timing of the tantivy build at one size, plus cProfile.

Stages (each on the same product stream, same process, sequentially):
  generate      FillerGenerator.make for every product (pure Python)
  to_document   + TantivyBackend._document (searchable_text, analyze, json.dumps, tantivy.Document)
  index         + IndexWriter.add_document, commit, wait_merging_threads (= the real build loop)
and a cProfile of build_sandbox() (main Python thread only; tantivy's indexing threads are native).

    .venv/bin/python benchmarks/profile_build.py --n 200000

Prints one JSON line and writes benchmarks/results/profile_build.json (+ profile_build.txt: top functions).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.catalogue.build import build_sandbox  # noqa: E402
from sandbox.catalogue.generator import FillerGenerator  # noqa: E402
from sandbox.catalogue.golds import GoldBuilder  # noqa: E402
from sandbox.catalogue.profile import learn_profile  # noqa: E402
from sandbox.engines.base import analyze, searchable_text  # noqa: E402
from sandbox.engines.prepared import prepare  # noqa: E402
from sandbox.engines.tantivy_backend import TantivyBackend  # noqa: E402
from sandbox.tasks import load_tasks  # noqa: E402

DEFAULT_TASKS = sorted(str(p) for p in (ROOT / "data" / "shoppingbench").glob("*.jsonl"))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile_build.json"))
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    n = args.n
    res: dict = {"n": n, "loadavg_start": [round(x, 2) for x in os.getloadavg()]}

    t0, c0 = time.perf_counter(), cpu()
    tasks = load_tasks(args.tasks)
    profile = learn_profile(tasks)
    recon = GoldBuilder(profile, 0, n).build(tasks)
    specials = recon.golds + recon.decoys
    res["setup_s"] = round(time.perf_counter() - t0, 2)

    def stream():
        gen = FillerGenerator(profile, 0, n, reserved_ids={p["product_id"] for p in specials})
        n_fill = max(0, n - len(specials))
        return itertools.chain(gen.stream(n_fill), specials)  # the per-product costs; order does not matter

    # 1. generation only
    t0, c0 = time.perf_counter(), cpu()
    k = sum(1 for _ in stream())
    res["generate"] = {"s": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu() - c0, 2), "n": k}

    # 2. + document conversion (split: searchable_text / json.dumps / tantivy.Document)
    be = TantivyBackend(work / "profile_idx", create=True)
    t_text = t_json = t_doc = 0.0
    t0, c0 = time.perf_counter(), cpu()
    for p in stream():
        a = time.perf_counter()
        searchable_text(p)
        b = time.perf_counter()
        orjson.dumps(p)  # the stored document, as the tantivy backend writes it
        c = time.perf_counter()
        be._document(prepare(p))
        d = time.perf_counter()
        t_text += b - a
        t_json += c - b
        t_doc += d - c
    res["generate+to_document"] = {"s": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu() - c0, 2),
                                   "searchable_text_s": round(t_text, 2), "json_dumps_s": round(t_json, 2),
                                   "_document_total_s (includes its own searchable_text+json)": round(t_doc, 2)}

    # 3. the real loop: generate + add_document in 5000-batches + commit
    t0, c0 = time.perf_counter(), cpu()
    t_add = 0.0
    batch = []
    for p in stream():
        batch.append(p)
        if len(batch) >= 5000:
            a = time.perf_counter()
            be.index_products(batch)
            t_add += time.perf_counter() - a
            batch = []
    if batch:
        be.index_products(batch)
    a = time.perf_counter()
    be.commit()
    t_commit = time.perf_counter() - a
    res["generate+index+commit"] = {"s": round(time.perf_counter() - t0, 2), "cpu_s (all threads)": round(cpu() - c0, 2),
                                    "index_products_s (incl _document)": round(t_add, 2),
                                    "commit+merge_s": round(t_commit, 2)}
    be.close()
    shutil.rmtree(work / "profile_idx", ignore_errors=True)

    # 4. analyze() alone on the titles, to show the unicode normalisation cost
    titles = [p["title"] for _, p in zip(range(50_000), stream(), strict=False)]
    t0 = time.perf_counter()
    for t in titles:
        analyze(t)
    res["analyze_50k_titles_s"] = round(time.perf_counter() - t0, 3)

    # 5. cProfile of the real build
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    build_sandbox(work / "profile_sb", args.tasks, n, progress=False)
    prof.disable()
    res["build_sandbox_under_cprofile_s"] = round(time.perf_counter() - t0, 2)
    shutil.rmtree(work / "profile_sb", ignore_errors=True)
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s).sort_stats("tottime")
    st.print_stats(30)
    s2 = io.StringIO()
    pstats.Stats(prof, stream=s2).sort_stats("cumulative").print_stats(30)
    txt = Path(args.out).with_suffix(".txt")
    txt.write_text(s.getvalue() + "\n\n" + s2.getvalue())
    top = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:15]:
        top.append({"function": f"{Path(file).name}:{line}:{fn}", "calls": nc, "tottime_s": round(tt, 2),
                    "cumtime_s": round(ct, 2)})
    res["cprofile_top_tottime"] = top
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "cprofile_top_tottime"}))


if __name__ == "__main__":
    main()
