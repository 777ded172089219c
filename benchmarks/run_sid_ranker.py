"""ADA-SID's router weights downstream in a ranker: DeepFM on MovieLens-1M CTR with semantic IDs as item fields.

Rows (configs/recsys/ml1m_sid/deepfm_ctr.yaml, the `sequences` protocol: leave-one-out, random negatives):
- `base`: the movie id and its first genre;
- `rqvae4_codes`: + the 4 code levels of an RQ-VAE-4 tokenizer run as fields;
- `ada_sid_codes`: + the 4 code levels of an ADA-SID run (its router weights left out);
- `ada_sid_router`: the same fields, each item's behavioural-level fields scaled by its router weight
  (`FeatureEmbedding.set_item_scales`), the row that tests "the router amplifies important IDs downstream";
- `ada_sid_mean_scale`: the same fields scaled by each level's mean router weight (the scale without the
  per-item information: what the router's gain owes to the weights themselves).
Ranker seed s uses tokenizer seed s (runs/recsys/ml1m_sid/<row>/tok<s>, from `run_semantic_ids.py`), so the
seed spread covers both. Two jobs side by side, one thread each; finished runs are skipped (resumable). Then the
table: test AUC / GAUC mean ± std, best epochs, a paired bootstrap over test users of the seed-mean ΔAUC
(`recsys_core.metrics.bootstrap_delta`), and a popularity floor (the candidate's training count as its score).

    .venv/bin/python benchmarks/run_sid_ranker.py [--seeds 0 1 2] [--table-only]

Runs: runs/recsys/ml1m_sid/ranker/<row>/seed<s>/; table: benchmarks/results/recsys/sid_ranker_ml1m.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run_semantic_ids import run, train_cmd  # noqa: E402  (this folder: the same niced, logged training call)
from semantic_id_table import mean_std  # noqa: E402

from recsys_core.metrics import auc, bootstrap_delta  # noqa: E402
from recsys_core.tasks.generative import popularity_tertiles  # noqa: E402

CONFIG = Path("configs/recsys/ml1m_sid/deepfm_ctr.yaml")
ROWS = {  # row: (label, tokenizer row or None, router_scales)
    "base": ("DeepFM, movie + genre fields", None, False),
    "rqvae4_codes": ("+ RQ-VAE-4 codes as fields", "rqvae4", False),
    "ada_sid_codes": ("+ ADA-SID codes as fields (router left out)", "ada_sid", False),
    "ada_sid_router": ("+ ADA-SID codes, scaled by the router's weights", "ada_sid", True),
    # the ablation: each level scaled by its mean router weight, so only the per-item information is gone
    "ada_sid_mean_scale": ("+ ADA-SID codes, scaled by the mean router weight", "ada_sid", "mean"),
}
COMPARISONS = [("rqvae4_codes", "base"), ("ada_sid_codes", "base"), ("ada_sid_codes", "rqvae4_codes"),
               ("ada_sid_router", "ada_sid_codes"), ("ada_sid_router", "ada_sid_mean_scale"),
               ("ada_sid_mean_scale", "ada_sid_codes")]
OUT = Path("benchmarks/results/recsys")
GROUPS = ("head", "torso", "tail")


def train(bin_dir: Path, sid_runs: Path, runs: Path, row: str, seed: int) -> tuple[str, int, int]:
    out = runs / row / f"seed{seed}"
    if (out / "metrics.json").exists():
        return row, seed, 0
    _, tokenizer, router = ROWS[row]
    sets = [f"train.seed={seed}"]
    if tokenizer:
        sid_run = sid_runs / tokenizer / f"tok{seed}"
        if not (sid_run / "codes.npy").exists():
            print(f"{row} seed {seed}: no tokenizer run {sid_run} (run benchmarks/run_semantic_ids.py)", flush=True)
            return row, seed, -1
        sets += [f"data.sid_run={sid_run}", f"data.router_scales={str(router).lower()}"]
    _, code = run(train_cmd(bin_dir, CONFIG, out, sets), out.parent / f"seed{seed}.log")
    return row, seed, code


def test_protocol() -> tuple[np.ndarray, np.ndarray]:
    """(training count per item, test samples' candidates): the training prefixes of the same protocol."""
    from recsys_core.config import ExperimentConfig
    from recsys_core.data.ctr import load_ctr

    data = load_ctr(dict(ExperimentConfig.from_yaml(CONFIG).data))
    counts = np.bincount(data.splits["train"].cand, minlength=data.n_items + 1).astype(np.float64)
    return counts, data.splits["test"].cand


def pair_accuracy(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per test user (samples come as positive, negative pairs): 1 if the positive scores higher, 0.5 on a tie."""
    if not ((label[0::2] == 1).all() and (label[1::2] == 0).all()):
        raise ValueError("test samples are not (positive, negative) pairs")
    pos, neg = prob[0::2], prob[1::2]
    return (pos > neg) + 0.5 * (pos == neg)


def table(runs: Path, out_dir: Path) -> None:
    rows = {}
    for row in ROWS:
        seeds = {}
        for path in sorted((runs / row).glob("seed*/metrics.json")):
            metrics = json.loads(path.read_text())
            predictions = np.load(path.parent / "test_predictions.npz")
            seeds[int(path.parent.name.removeprefix("seed"))] = {"metrics": metrics, "prob": predictions["prob"],
                                                                 "label": predictions["label"],
                                                                 "user": predictions["user"]}
        rows[row] = seeds
    counts, test_cand = test_protocol()
    groups = popularity_tertiles(counts)[test_cand[0::2]]  # the held-out movie's popularity third
    jitter = 1e-6 * np.random.default_rng(0).random(len(test_cand))  # the floor's ties broken at random
    floor_score = counts[test_cand] + jitter
    floor_label = np.tile([1.0, 0.0], len(test_cand) // 2)
    floor_acc = pair_accuracy(floor_score, floor_label)
    floor = {"auc": auc(floor_label, floor_score), "gauc": float(floor_acc.mean()),
             **{f"gauc_{g}": float(floor_acc[groups == i].mean()) for i, g in enumerate(GROUPS)}}
    lines = ["# ADA-SID's router downstream: semantic IDs as ranker fields (MovieLens-1M CTR)", "",
             "`python benchmarks/run_sid_ranker.py`. DeepFM (`configs/recsys/ml1m_sid/deepfm_ctr.yaml`) on MovieLens-1M",
             "in the `sequences` CTR protocol: leave-one-out on the same training prefixes the tokenizers saw, each",
             "user's last 20 training positions with one random negative each (redrawn every epoch); test = every",
             "user's held-out movie + one random negative (6,040 pairs, the same for every run). Early stopping on",
             "validation AUC (patience 2, at most 30 epochs). Ranker seed s uses tokenizer seed s; ± = std over seeds.",
             "Δ = seed-mean ΔAUC with a paired bootstrap over test users (500 resamples, 95% interval). GAUC by",
             "third = the share of users whose held-out movie outscores its negative, by the movie's popularity",
             f"third (training count; users: head {(groups == 0).sum():,}, torso {(groups == 1).sum():,}, "
             f"tail {(groups == 2).sum():,}).", "",
             "| row | seeds | test AUC | test GAUC | GAUC head | GAUC torso | GAUC tail | best epochs |",
             "|---|---|---|---|---|---|---|---|"]
    summary: dict = {"rows": {}, "paired": {}, "popularity_floor": floor}
    for row, seeds in rows.items():
        if not seeds:
            continue
        aucs = [s["metrics"]["test"]["auc"] for s in seeds.values()]
        gaucs = [s["metrics"]["test"]["gauc"] for s in seeds.values()]
        epochs = [s["metrics"].get("best_epoch") for s in seeds.values()]
        by_group = {g: [float(pair_accuracy(s["prob"], s["label"])[groups == i].mean()) for s in seeds.values()]
                    for i, g in enumerate(GROUPS)}
        lines.append(f"| {ROWS[row][0]} | {len(seeds)} | {mean_std(aucs)} | {mean_std(gaucs)} | "
                     + " | ".join(mean_std(by_group[g]) for g in GROUPS) + f" | {', '.join(str(e) for e in epochs)} |")
        summary["rows"][row] = {"label": ROWS[row][0], "seeds": sorted(seeds), "test_auc": aucs, "test_gauc": gaucs,
                                **{f"test_gauc_{g}": by_group[g] for g in GROUPS}, "best_epochs": epochs}
    lines.append(f"| popularity floor (training count) | – | {floor['auc']:.4f} | {floor['gauc']:.4f} | "
                 + " | ".join(f"{floor[f'gauc_{g}']:.4f}" for g in GROUPS) + " | – |")
    lines += ["", "| row | against | Δ AUC [95% CI] | seeds |", "|---|---|---|---|"]
    for row, ref in COMPARISONS:
        common = sorted(set(rows[row]) & set(rows[ref]))
        if not common:
            continue
        first = rows[row][common[0]]
        for run_of_seed in [rows[name][s] for name in (row, ref) for s in common]:
            # paired only if every run scored the same test samples in the same order
            if not all(np.array_equal(run_of_seed[k], first[k]) for k in ("label", "user")):
                raise ValueError(f"{row} / {ref}: the test samples differ between runs; rerun with the same data")
        delta = bootstrap_delta([rows[row][s]["prob"] for s in common], [rows[ref][s]["prob"] for s in common],
                                first["label"], first["user"])
        lines.append(f"| {ROWS[row][0]} | {ROWS[ref][0]} | {delta['delta_auc']:+.4f} "
                     f"[{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}] | {len(common)} |")
        summary["paired"][f"{row} vs {ref}"] = {**delta, "seeds": common}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sid_ranker_ml1m.md").write_text("\n".join(lines) + "\n")
    (out_dir / "sid_ranker_ml1m.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--sid-runs", type=Path, default=Path("runs/recsys/ml1m_sid"))
    parser.add_argument("--runs", type=Path, default=Path("runs/recsys/ml1m_sid/ranker"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--bin", type=Path, default=Path(".venv/bin"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    failures = 0
    if not args.table_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            jobs = [pool.submit(train, args.bin, args.sid_runs, args.runs, row, seed)
                    for seed in args.seeds for row in args.rows]
            for job in jobs:
                row, seed, code = job.result()
                print(f"{row} seed {seed}: {'ok' if code == 0 else f'FAILED ({code})'}", flush=True)
                failures += code != 0
    table(args.runs, args.out)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
