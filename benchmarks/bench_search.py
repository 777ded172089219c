"""Search latency of built sandboxes (tantivy), against a ShoppingBench-style post-filter baseline.

For every size it opens <work-dir>/sb_<size> (built by bench_build.py) and measures, after a
warm-up, single-threaded latency of the same deterministic query set in these modes:

  relevance        no filters, BM25 relevance               backend.search_sorted_or_relaxed(request)
  filtered         price range + service (+ shop_id in ~30%), relevance
  sorted           the filtered requests sorted by priceasc / order (in-engine sort, all-terms match with
                   any-term fallback: what the find_product tool does)
  <mode>_unplanned  the same three with SearchBackend's unplanned rule (each tier one exhaustive, counted
                   query: the previous method), right after, with the number of identical pages and totals
  baseline_filtered   ShoppingBench-style: BM25 for the same terms with NO engine filter, up to 100,000
                   hits, then each hit's stored JSON is loaded and filtered in Python until the page is full
  baseline_sorted  same retrieval, all (up to 100,000) hits loaded + filtered, then sorted in Python

and through the environment (ShoppingEnv.step with JSON-string arguments, as an LLM tool call):

  env_find_product          step("find_product", ...) end to end, the filtered/sorted request mix
  env_find_product_overhead the same steps minus the time spent inside world.search (wrapped)
  env_calculate, env_view_cart   steps that never touch the search engine

    .venv/bin/python benchmarks/bench_search.py --sizes 100000 1000000 2500000

Prints one JSON line to stdout and writes benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.data_model import SERVICES  # noqa: E402
from sandbox.engines.base import SearchBackend, SearchRequest, SortOrder, analyze, query_terms  # noqa: E402
from sandbox.environment import ShoppingEnv  # noqa: E402
from sandbox.tasks import Task  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402

BASELINE_LIMIT = 100_000
STOPWORDS = set("""a an the and or of for to in on with without by from at as is are be it its this that these those
i me my we you your he she they them looking look find show need want wants searching search get buy give
please some any can could would like also which who what where when how about over under above below than priced
price cost costs costing php pesos peso p between less more greater available only one".split()""".split())


def code_fingerprint() -> dict:
    """Which sandbox code was measured: sha1 of the sandbox sources (other people edit them concurrently)."""
    import hashlib
    files = sorted((ROOT / "sandbox").rglob("*.py"))
    h = hashlib.sha1()
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode())
        h.update(f.read_bytes())
    schema = hashlib.sha1((ROOT / "sandbox" / "engines" / "tantivy_backend.py").read_bytes()).hexdigest()[:12]
    return {"sandbox_sha1": h.hexdigest()[:12], "tantivy_backend_sha1": schema,
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ----------------------------------------------------------------------------------------------------------
# query set
# ----------------------------------------------------------------------------------------------------------
def key_words(text: str) -> list[str]:
    return [w for w in analyze(text) if w not in STOPWORDS and not re.fullmatch(r"\d+(\.\d+)?", w)]


def pick_words(words: list[str], rng: random.Random) -> list[str]:
    """2-6 words, kept in their original order."""
    words = list(dict.fromkeys(words))
    if len(words) <= 2:
        return words
    k = rng.randint(2, min(6, len(words)))
    idx = sorted(rng.sample(range(len(words)), k))
    return [words[i] for i in idx]


def make_queries(tasks: list[Task], golds: dict[str, dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Deterministic queries from the dev tasks: 2-6 key words of the instruction or of a reward title, with
    filters taken from the reward spec when it has them (else drawn around the gold product)."""
    rng = random.Random(f"{seed}:queries")
    sources: list[tuple[Task, int, str]] = []
    for t in tasks:
        sources.append((t, 0, t.query))
        for i, spec in enumerate(t.reward):
            for title in spec.title[:1]:
                sources.append((t, i, title))
    out: list[dict[str, Any]] = []
    round_ = 0
    while len(out) < n:
        order = list(range(len(sources)))
        random.Random(f"{seed}:order:{round_}").shuffle(order)
        for j in order:
            if len(out) >= n:
                break
            task, i, text = sources[j]
            words = pick_words(key_words(text), rng)
            if len(words) < 1:
                continue
            spec = task.reward[i]
            gold = golds.get(spec.product_id, {})
            pr = spec.price_range()
            gp = float(gold.get("price") or 100.0)
            low = pr.low if pr is not None else None
            high = pr.high if pr is not None else None
            if low is None and high is None:  # no price in the task: a range around the gold price
                low, high = round(gp * rng.uniform(0.3, 0.9), 0), round(gp * rng.uniform(1.1, 3.0), 0)
            services = list(spec.service) or [rng.choice(SERVICES)]
            shop = gold.get("shop_id") if rng.random() < 0.3 else None
            out.append({
                "task_id": task.task_id,
                "terms": query_terms(" ".join(words)),
                "q": " ".join(words),
                "price_min": low, "price_max": high,
                "services": tuple(dict.fromkeys(services)),
                "shop_id": shop,
                "sort": rng.choice([SortOrder.priceasc, SortOrder.order]),
                "page": 2 if rng.random() < 0.1 else 1,
            })
        round_ += 1
    return out


def price_arg(low: float | None, high: float | None) -> str:
    lo = "" if low is None else f"{low:g}"
    hi = "" if high is None else f"{high:g}"
    return f"{lo}-{hi}"


def requests_for(q: dict[str, Any], mode: str) -> SearchRequest:
    if mode == "relevance":
        return SearchRequest(terms=tuple(q["terms"]), page=q["page"])
    req = SearchRequest(terms=tuple(q["terms"]), page=q["page"], shop_id=q["shop_id"], price_min=q["price_min"],
                        price_max=q["price_max"], services=q["services"])
    if mode == "sorted":
        req = replace(req, sort=q["sort"])
    return req


# ----------------------------------------------------------------------------------------------------------
# the ShoppingBench-style baseline: retrieve by BM25 without filters, filter (and sort) in Python
# ----------------------------------------------------------------------------------------------------------
def _passes(p: dict[str, Any], req: SearchRequest) -> bool:
    price = float(p["price"])
    if req.price_min is not None and price < req.price_min:
        return False
    if req.price_max is not None and price > req.price_max:
        return False
    if req.shop_id is not None and str(p["shop_id"]) != req.shop_id:
        return False
    if req.services:
        have = p.get("service") or []
        if any(s not in have for s in req.services):
            return False
    return True


def baseline_search(backend, req: SearchRequest) -> tuple[list[str], int]:
    """Returns (product ids of the page, number of stored docs loaded)."""
    searcher = backend.searcher
    query = backend.text_query(req.terms, False)
    result = searcher.search(query, limit=BASELINE_LIMIT)
    need = req.offset + req.page_size
    loaded = 0
    if req.sort == SortOrder.default:
        matched: list[dict[str, Any]] = []
        for _score, address in result.hits:
            p = json.loads(searcher.doc(address)["doc"][0])
            loaded += 1
            if _passes(p, req):
                matched.append(p)
                if len(matched) >= need:
                    break
        page = matched[req.offset:need]
    else:
        matched = []
        for _score, address in result.hits:
            p = json.loads(searcher.doc(address)["doc"][0])
            loaded += 1
            if _passes(p, req):
                matched.append(p)
        if req.sort == SortOrder.priceasc:
            matched.sort(key=lambda p: float(p["price"]))
        elif req.sort == SortOrder.pricedesc:
            matched.sort(key=lambda p: -float(p["price"]))
        else:
            matched.sort(key=lambda p: -int(p.get("sold_count") or 0))
        page = matched[req.offset:need]
    return [p["product_id"] for p in page], loaded


# ----------------------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(ms: list[float], **extra: Any) -> dict[str, Any]:
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3),
            "p99_ms": round(pct(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(max(ms), 3), "qps": round(len(ms) / (sum(ms) / 1000), 1), **extra}


def timed(fn: Callable[[Any], Any], items: list[Any], warmup: int) -> tuple[list[float], list[Any]]:
    for it in items[:warmup]:
        fn(it)
    gc.collect()
    gc.disable()  # no collector pauses attributed to one query; re-enabled after
    try:
        ms, outs = [], []
        for it in items:
            t0 = time.perf_counter()
            out = fn(it)
            ms.append((time.perf_counter() - t0) * 1000)
            outs.append(out)
    finally:
        gc.enable()
    return ms, outs


def warm_files(path: Path) -> None:
    """Read the index once so that every size starts from a warm page cache."""
    for p in path.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                while fh.read(1 << 24):
                    pass


def sandbox_golds(world: ShoppingWorld) -> dict[str, dict[str, Any]]:
    """Gold products and decoys of a built sandbox, by id."""
    golds = {}
    with (world.data_dir / "special_products.jsonl").open() as fh:
        for line in fh:
            p = json.loads(line)
            golds[p["product_id"]] = p
    return golds


def dev_queries(world: ShoppingWorld, n: int, seed: int) -> list[dict[str, Any]]:
    """The benchmark's query set for a built sandbox: derived from its tasks and gold products."""
    return make_queries(list(world.tasks.values()), sandbox_golds(world), n, seed)


# ----------------------------------------------------------------------------------------------------------
def bench_size(data_dir: Path, tasks_files: list[str] | None, args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    try:
        world = ShoppingWorld.open(data_dir)
    except ValueError as exc:  # e.g. "An index exists but the schema does not match"
        raise SystemExit(f"cannot open {data_dir}: {exc}\nThe sandbox code changed since this sandbox was built; "
                         "rebuild it with benchmarks/bench_build.py") from exc
    backend = world.backend
    warm_files(data_dir / "index" / "tantivy")
    tasks = list(world.tasks.values())
    golds = sandbox_golds(world)
    queries = make_queries(tasks, golds, args.n_queries, args.seed)
    res: dict[str, Any] = {"n_products": backend.count(), "n_queries": len(queries)}
    w = args.warmup
    log = lambda m: print(f"  [{data_dir.name}] {m}", file=sys.stderr, flush=True)  # noqa: E731

    pages: dict[str, list[Any]] = {}
    for mode in ("relevance", "filtered", "sorted"):
        reqs = [requests_for(q, mode) for q in queries]
        # One untimed pass of both rules over every request: the first touch of an index page costs a
        # fault, and whichever rule ran first would pay it alone.
        for r in reqs:
            backend.search_sorted_or_relaxed(r)
            SearchBackend.search_sorted_or_relaxed(backend, r)
        ms, outs = timed(backend.search_sorted_or_relaxed, reqs, w)
        pages[mode] = outs
        res[mode] = summary(ms, mean_total=round(statistics.fmean(o.total for o in outs), 1),
                            empty_pages=sum(1 for o in outs if not o.hits),
                            relaxed=sum(1 for o in outs if o.relaxed))
        log(f"{mode}: p50 {res[mode]['p50_ms']} ms p99 {res[mode]['p99_ms']} ms")
        # The same rule unplanned (SearchBackend's: each tier one exhaustive, counted query), same requests,
        # right after: the previous method, in the same process.
        ms, plain = timed(lambda r: SearchBackend.search_sorted_or_relaxed(backend, r), reqs, w)
        same = sum(1 for a, b in zip(outs, plain, strict=True)
                   if [h.product_id for h in a.hits] == [h.product_id for h in b.hits] and a.total == b.total)
        res[f"{mode}_unplanned"] = summary(ms, same_page_and_total_as_planned=f"{same}/{len(reqs)}")
        log(f"{mode}_unplanned: p50 {res[mode + '_unplanned']['p50_ms']} ms p99 {res[mode + '_unplanned']['p99_ms']} ms"
            f" (same pages {same}/{len(reqs)})")

    # Baseline, same index, same requests.
    base_f_reqs = [requests_for(q, "filtered") for q in queries[: args.n_baseline]]
    ms, outs = timed(lambda r: baseline_search(backend, r), base_f_reqs, min(w, 10))
    # Agreement with the engine: identical BM25 scores, so the pages should match unless the 100k cap
    # cut the matching products off or equal scores are ordered differently.
    same = sum(1 for (ids, _), page in zip(outs, pages["filtered"], strict=False) if ids == [h.product_id for h in page.hits])
    res["baseline_filtered"] = summary(ms, mean_docs_loaded=round(statistics.fmean(o[1] for o in outs), 1),
                                       same_page_as_engine=f"{same}/{len(outs)}")
    log(f"baseline_filtered: p50 {res['baseline_filtered']['p50_ms']} ms p99 {res['baseline_filtered']['p99_ms']} ms")
    base_s_reqs = [requests_for(q, "sorted") for q in queries[: args.n_baseline_sorted]]
    ms, outs = timed(lambda r: baseline_search(backend, r), base_s_reqs, min(w, 5))
    res["baseline_sorted"] = summary(ms, mean_docs_loaded=round(statistics.fmean(o[1] for o in outs), 1))
    log(f"baseline_sorted: p50 {res['baseline_sorted']['p50_ms']} ms p99 {res['baseline_sorted']['p99_ms']} ms")
    # Speedups on the same subset of queries the baseline ran.
    f_sub = [m for m in _ms_of(backend, base_f_reqs)]
    s_sub = [m for m in _ms_of(backend, base_s_reqs)]
    res["speedup"] = {
        "filtered_p50": round(res["baseline_filtered"]["p50_ms"] / pct(f_sub, 50), 1),
        "filtered_p99": round(res["baseline_filtered"]["p99_ms"] / pct(f_sub, 99), 1),
        "sorted_p50": round(res["baseline_sorted"]["p50_ms"] / pct(s_sub, 50), 1),
        "sorted_p99": round(res["baseline_sorted"]["p99_ms"] / pct(s_sub, 99), 1),
        "note": "baseline percentile / engine percentile over the same requests (engine re-timed on that subset)",
    }

    # Through the environment.
    res.update(bench_env(world, tasks, golds, queries, w))
    for k in ("env_find_product", "env_find_product_overhead", "env_calculate", "env_view_cart"):
        log(f"{k}: p50 {res[k]['p50_ms']} ms p99 {res[k]['p99_ms']} ms")
    res["code"] = args.code  # taken when this process imported the sandbox package
    res["built_with"] = json.loads((data_dir / "manifest.json").read_text()).get("format_version")
    res["loadavg_start"] = [round(x, 2) for x in load_start]
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    world.close()
    return res


def _ms_of(backend, reqs: list[SearchRequest]) -> list[float]:
    ms, _ = timed(backend.search_sorted_or_relaxed, reqs, 0)
    return ms


def bench_env(world: ShoppingWorld, tasks: list[Task], golds: dict[str, dict[str, Any]],
              queries: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    task = next((t for t in tasks if t.voucher is not None), tasks[0])
    env = ShoppingEnv(world, task, max_steps=10**9)
    search_ms: list[float] = []
    inner = world.search

    def timed_search(request):
        t0 = time.perf_counter()
        try:
            return inner(request)
        finally:
            search_ms.append((time.perf_counter() - t0) * 1000)

    world.search = timed_search  # instance attribute shadows the method
    try:
        calls = []
        for i, q in enumerate(queries):
            a: dict[str, Any] = {"q": q["q"], "price": price_arg(q["price_min"], q["price_max"]),
                                 "service": ",".join(q["services"]), "page": q["page"]}
            if q["shop_id"]:
                a["shop_id"] = q["shop_id"]
            if i % 2:
                a["sort"] = q["sort"].value
            calls.append(json.dumps(a))

        def fp(arguments: str):
            search_ms.clear()
            r = env.step("find_product", arguments)
            if not r.ok and not r.observation.startswith("No products"):
                raise RuntimeError(r.observation)
            return sum(search_ms)

        ms, inside = timed(fp, calls, warmup)
        env.state.history.clear()
        overhead = [m - s for m, s in zip(ms, inside, strict=True)]
        out = {"env_find_product": summary(ms), "env_find_product_overhead": summary(overhead),
               "env_find_product_search_only": summary(inside)}

        exprs = [json.dumps({"expression": f"({i % 97} + {i % 13}.5) * 0.{i % 9 + 1} - {i % 7}"}) for i in range(len(queries))]
        ms, _ = timed(lambda a: env.step("calculate", a), exprs, warmup)
        out["env_calculate"] = summary(ms)
        env.state.history.clear()

        for pid in list(golds)[:3]:  # a cart with three products
            r = env.step("add_to_cart", json.dumps({"product_id": pid, "quantity": 2}))
            assert r.ok, r.observation
        ms, _ = timed(lambda a: env.step("view_cart", a), ["{}"] * len(queries), warmup)
        out["env_view_cart"] = summary(ms)
        env.state.history.clear()
    finally:
        del world.search
    return out



def probe_parser() -> argparse.ArgumentParser:
    """The options every diagnostic probe over a built `sb_<size>` sandbox shares."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2_500_000)
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--n-queries", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def open_probe(args: argparse.Namespace) -> tuple[ShoppingWorld, list[SearchRequest]]:
    """The probe's sandbox, its index files warmed, and the filtered dev-query requests."""
    data_dir = Path(args.work_dir) / f"sb_{args.size}"
    world = ShoppingWorld.open(data_dir)
    warm_files(data_dir / "index" / "tantivy")
    return world, [requests_for(q, "filtered") for q in dev_queries(world, args.n_queries, args.seed)]


def save_probe(name: str, res: dict[str, Any]) -> None:
    """Write results/<name>.json and print the one-line p50/p99 digest."""
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (ROOT / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: ([v["p50_ms"], v["p99_ms"]] if isinstance(v, dict) else v) for k, v in res.items()}))

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 2_500_000])
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--n-queries", type=int, default=600)
    ap.add_argument("--n-baseline", type=int, default=600, help="queries for the filtered baseline")
    ap.add_argument("--n-baseline-sorted", type=int, default=200,
                    help="queries for the sorted baseline (each loads up to 100k stored docs)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search.json"))
    ap.add_argument("--merge", action="store_true", help="keep results of sizes not run now that are in --out")
    args = ap.parse_args()
    args.code = code_fingerprint()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if args.merge and out.exists():
        results = json.loads(out.read_text()).get("sizes", {})
    for n in args.sizes:
        data_dir = Path(args.work_dir) / f"sb_{n}"
        print(f"search benchmark on {data_dir} ...", file=sys.stderr, flush=True)
        results[str(n)] = bench_size(data_dir, None, args)
    doc = {
        "benchmark": "search",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "targets": {"filtered_p50_ms": 2, "filtered_p99_ms": 20, "speedup_vs_postfilter": 10, "env_overhead_ms": 5},
        "baseline": f"BM25 any-term, no engine filter, limit={BASELINE_LIMIT}, stored JSON loaded + filtered "
                    "in Python until the page is full; sorted: all hits filtered then sorted in Python",
        "sizes": dict(sorted(results.items(), key=lambda kv: int(kv[0]))),
    }
    out.write_text(json.dumps(doc, indent=2))
    keys = ("relevance", "filtered", "sorted", "baseline_filtered", "baseline_sorted", "env_find_product",
            "env_find_product_overhead", "env_calculate", "env_view_cart")
    summ = {n: {**{k: [r[k]["p50_ms"], r[k]["p99_ms"]] for k in keys},
                "speedup_filtered_p50_p99": [r["speedup"]["filtered_p50"], r["speedup"]["filtered_p99"]],
                "speedup_sorted_p50_p99": [r["speedup"]["sorted_p50"], r["speedup"]["sorted_p99"]]}
            for n, r in doc["sizes"].items()}
    print(json.dumps({"benchmark": "search", "out": str(out), "units": "[p50_ms, p99_ms]", "results": summ}))


if __name__ == "__main__":
    main()
