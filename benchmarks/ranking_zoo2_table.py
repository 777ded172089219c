"""Ranking zoo II tables (issue 21), one per setting, from the run folders of `benchmarks/run_ranking_zoo2.sh`:

    .venv/bin/python benchmarks/ranking_zoo2_table.py --runs runs/recsys/zoo2 --out benchmarks/results/recsys/zoo2

- long sequences (ML-1M CTR, L = 50 / 200 / 1000): low-rank target attention vs full softmax target attention
  and DIN, and without its nonlinearity-preserving loss; the serving-cost curve is
  `benchmarks/bench_long_sequence.py`'s;
- HeterRec vs SASRec (Beauty and ML-1M next item, leave-one-out, full ranking) and one ablation per part;
- GSVR vs its multi-scenario base, per-scenario AUC (scenarios = genre groups), and with a standard prior;
- DMAE vs DIN, without its distribution guidance, without the text modality;
- CDAnet vs target-only training and shared-embedding transfer on the target domain (family movies).

Cells are mean ± std over seeds (early stopping on validation in every run). Each row is compared with its
base by a paired bootstrap over test users on the seeds both have (500 resamples, 95% interval): ΔAUC of the
seed-mean for CTR rows (`recsys_core.metrics.bootstrap_delta`), Δ mean NDCG@10 for next-item rows (from the
per-user test ranks every run saves). Heuristic floors come from the data (popularity, attribute match).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ranking_zoo_table import cell, collect_row, fmt, seed_runs  # noqa: E402

from recsys_core.metrics import auc, bootstrap_delta  # noqa: E402

ML = {"kind": "movielens", "user_sample": 1000}
CTR_SETTINGS = {
    **{f"longseq/L{L}": {
        "title": f"Long sequences, L = {L} (ML-1M CTR, 1,000 users)", "data": {**ML, "max_len": L},
        "rows": (("full", "full softmax target attention (rank 0)", None),
                 ("din", "DIN (activation-unit attention)", None),
                 ("lrta", "low-rank target attention, r = 16", "full"),
                 ("lrta_no_approx", "low-rank − nonlinearity-preserving loss", "lrta"))}
       for L in (50, 200, 1000)},
    "gsvr": {"title": "GSVR, multi-scenario (ML-1M CTR, scenarios = genre groups, 1,000 users)",
             "data": {**ML, "max_len": 50}, "per_scenario": True,
             "rows": (("base", "multi-scenario base (shared bottom + scenario heads)", None),
                      ("gsvr", "GSVR (variational, global knowledge-aware prior)", "base"),
                      ("gsvr_standard_prior", "GSVR − global prior (N(0, I) prior)", "gsvr"))},
    "dmae": {"title": "DMAE, multimodal interests (ML-1M CTR, 1,000 users)", "data": {**ML, "max_len": 50},
             # DIN at L = 50 on the same 1,000 users is the long-sequence table's run: not trained twice
             "folders": {"din": "../longseq/L50/din"},
             "rows": (("din", "DIN", None),
                      ("dmae", "DMAE (behaviour + attributes + MiniLM text)", "din"),
                      ("dmae_no_guidance", "DMAE − distribution guidance", "dmae"),
                      ("dmae_no_text", "DMAE − text modality", "dmae"))},
    "cdanet": {"title": "CDAnet, cross-domain (ML-1M CTR, target domain = family movies, 1,000 users)",
               "data": {**ML, "max_len": 50, "candidate_groups": ["family"]},
               "rows": (("target_only", "target-only (target samples, target history)", None),
                        ("shared_embedding", "shared-embedding transfer (both domains' samples)", "target_only"),
                        ("translation", "CDAnet stage 1 alone (translation network)", "target_only"),
                        ("cdanet", "CDAnet (augmentation on the translated features)", "target_only"),
                        ("cdanet_no_cross", "CDAnet − cross-supervision in stage 1", "cdanet"))},
}
NEXT_ITEM_SETTINGS = {
    f"heterrec/{ds}": {"title": f"HeterRec, next item ({title}, leave-one-out, full ranking)", "dataset": ds,
                       "rows": (("sasrec", "SASRec", None),
                                ("heterrec", "HeterRec (HTFL + HCT + LMP, 3 steps)", "sasrec"),
                                ("heterrec_no_htfl", "HeterRec − HTFL (id token only)", "heterrec"),
                                ("heterrec_no_token_level", "HeterRec − token-level attention", "heterrec"),
                                ("heterrec_no_lmp", "HeterRec − LMP (next item only)", "heterrec"))}
    for ds, title in (("beauty", "Amazon Beauty"), ("ml1m", "MovieLens-1M"))}


def epochs_text(ms: list[dict]) -> str:
    return (f"{statistics.fmean([m['best_epoch'] for m in ms]):.1f} / "
            f"{statistics.fmean([m['epochs_run'] for m in ms]):.1f}")


@functools.cache
def ctr_data(key: str):
    """The CTR data of a `data:` section (JSON key): settings with the same section load it once."""
    from recsys_core.data.ctr import load_ctr

    return load_ctr(json.loads(key))


def ctr_table(name: str, spec: dict, runs: Path, resamples: int) -> tuple[str, dict]:
    from recsys_core.data.ctr import floor_metrics

    folders = spec.get("folders", {})
    rows = {key: collect_row(runs / name, folders.get(key, key), None) for key, _, _ in spec["rows"]}
    if not any(r["metrics"] for r in rows.values()):
        return "", {}
    data = ctr_data(json.dumps(spec["data"], sort_keys=True))
    scenario = data.item_group[data.splits["test"].cand] if spec.get("per_scenario") else None
    head = "| model | AUC | GAUC | logloss | seeds | best epoch / run | train samples/s | Δ AUC vs base [95% CI] |"
    if scenario is not None:
        counts = np.bincount(scenario, minlength=len(data.group_names))
        head += "".join(f" AUC {g} ({counts[i]:,}) |" for i, g in enumerate(data.group_names))
    lines = [f"### {spec['title']}", "", head, "|---" * (head.count("|") - 1) + "|"]
    out: dict = {"floors": floor_metrics(data, "test", (1, 2)), "rows": {}}
    pad = " – |" * (len(data.group_names) if scenario is not None else 0)
    for fname, f in out["floors"].items():
        loss = "–" if f["logloss"] is None else f"{f['logloss']:.4f}"
        lines.append(f"| floor: {fname.replace('_', ' ')} | {f['auc']:.4f} | {f['gauc']:.4f} | {loss} | – | – | – | – |"
                     + pad)
    for key, label, base in spec["rows"]:
        row = rows[key]
        if not row["metrics"]:
            continue
        ms = list(row["metrics"].values())
        stats = {k: cell([m["test"].get(k) for m in ms]) for k in ("auc", "gauc", "logloss")}
        speed = cell([m.get("train_samples_per_s") for m in ms])
        delta = None
        if base and rows.get(base, {}).get("preds") and row["preds"]:
            common = sorted(set(row["preds"]) & set(rows[base]["preds"]))
            if common:
                ref = rows[base]["preds"][common[0]]
                delta = bootstrap_delta([row["preds"][s]["prob"] for s in common],
                                        [rows[base]["preds"][s]["prob"] for s in common], ref["label"], ref["user"],
                                        n=resamples)
                delta.update(seeds=common, base=base)
        entry = {"label": label, "test": stats, "seeds": sorted(row["metrics"]), "epochs": epochs_text(ms),
                 "train_samples_per_s": speed, "vs_base": delta}
        scen_txt = ""
        if scenario is not None and row["preds"]:
            per = {g: cell([auc(p["label"][scenario == i], p["prob"][scenario == i]) for p in row["preds"].values()])
                   for i, g in enumerate(data.group_names)}
            entry["per_scenario_auc"] = per
            scen_txt = "".join(f" {fmt(per[g])} |" for g in data.group_names)
        out["rows"][key] = entry
        delta_txt = "–" if not delta else (f"{delta['delta_auc']:+.4f} [{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}]"
                                           f" vs {base} ({len(delta['seeds'])} seeds)")
        speed_txt = f"{speed['mean']:,.0f}" if speed else "–"
        lines.append(f"| {label} | {fmt(stats['auc'])} | {fmt(stats['gauc'])} | {fmt(stats['logloss'])} | {len(ms)} | "
                     f"{epochs_text(ms)} | {speed_txt} | {delta_txt} |{scen_txt}")
    return "\n".join(lines), out


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    return np.where((ranks >= 0) & (ranks < k), 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def bootstrap_mean_delta(a: list[np.ndarray], b: list[np.ndarray], n: int = 500, seed: int = 0) -> dict:
    """Paired bootstrap over users of the seed-mean difference of per-user values (one user draw for all seeds)."""
    diff = np.mean([x - y for x, y in zip(a, b, strict=True)], axis=0)
    rng = np.random.default_rng(seed)
    draws = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"delta": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi), "resamples": n}


def popularity_floor(dataset: str, s3rec: str) -> dict[str, float]:
    """Recall/NDCG of ranking every item by its training-prefix popularity (the same list for every user)."""
    import torch

    from recsys_core.data.sources import load_sequences
    from recsys_core.tasks.next_item import full_ranking_eval

    cfg = {"kind": "s3rec", "path": s3rec, "dataset": "Beauty"} if dataset == "beauty" else {"kind": "movielens"}
    data = load_sequences(cfg)
    counts = torch.as_tensor(data.item_counts("train"), dtype=torch.float)
    return full_ranking_eval(lambda ids: counts.expand(len(ids), -1).clone(), data, "test", 50)


def next_item_table(name: str, spec: dict, runs: Path, s3rec: str, resamples: int) -> tuple[str, dict]:
    rows = {}
    for key, _, _ in spec["rows"]:
        found = seed_runs(runs / name / key)
        rows[key] = {"metrics": {s: json.loads((r / "metrics.json").read_text()) for s, r in found.items()},
                     "ranks": {s: np.load(r / "test_ranks.npz")["rank"] for s, r in found.items()
                               if (r / "test_ranks.npz").exists()}}
    if not any(r["metrics"] for r in rows.values()):
        return "", {}
    floor = popularity_floor(spec["dataset"], s3rec)
    lines = [f"### {spec['title']}", "",
             "| model | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | seeds | best epoch / run | Δ NDCG@10 vs base [95% CI] |",
             "|---|---|---|---|---|---|---|---|",
             f"| floor: popularity | {floor['recall@10']:.4f} | {floor['ndcg@10']:.4f} | {floor['recall@20']:.4f} | "
             f"{floor['ndcg@20']:.4f} | – | – | – |"]
    out: dict = {"floors": {"popularity": floor}, "rows": {}}
    for key, label, base in spec["rows"]:
        row = rows[key]
        if not row["metrics"]:
            continue
        ms = list(row["metrics"].values())
        stats = {k: cell([m["test"].get(k) for m in ms]) for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
        delta = None
        if base and rows[base]["ranks"] and row["ranks"]:
            common = sorted(set(row["ranks"]) & set(rows[base]["ranks"]))
            if common:
                delta = bootstrap_mean_delta([ndcg_at(row["ranks"][s]) for s in common],
                                             [ndcg_at(rows[base]["ranks"][s]) for s in common], n=resamples)
                delta.update(seeds=common, base=base)
        out["rows"][key] = {"label": label, "test": stats, "seeds": sorted(row["metrics"]), "epochs": epochs_text(ms),
                            "vs_base": delta}
        delta_txt = "–" if not delta else (f"{delta['delta']:+.4f} [{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}] "
                                           f"vs {base} ({len(delta['seeds'])} seeds)")
        lines.append(f"| {label} | {fmt(stats['recall@10'])} | {fmt(stats['ndcg@10'])} | {fmt(stats['recall@20'])} | "
                     f"{fmt(stats['ndcg@20'])} | {len(ms)} | {epochs_text(ms)} | {delta_txt} |")
    return "\n".join(lines), out


def latency_section(path: Path) -> str:
    if not path.exists():
        return ""
    rows = json.loads(path.read_text())["rows"]
    lines = ["### Serving cost per request (1 CPU thread, `benchmarks/bench_long_sequence.py`)", "",
             "| L | DIN ms | full attention ms | low-rank, compressed per request ms | low-rank, pre-stored ms | "
             "full / pre-stored | attention alone: full / pre-stored ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['L']} | {r['din_ms']:.1f} | {r['full_ms']:.2f} | {r['lowrank_request_ms']:.2f} | "
                     f"{r['lowrank_prestored_ms']:.2f} | {r['full_over_prestored']}× | "
                     f"{r['full_attention_only_ms']:.2f} / {r['lowrank_attention_only_ms']:.2f} "
                     f"({r['attention_only_ratio']}×) |")
    lines += ["", f"{rows[0]['N']} candidates per request, rank r = {rows[0]['rank']}; "
              "![cost curve](long_sequence_latency.png)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/recsys/zoo2")
    ap.add_argument("--out", default="benchmarks/results/recsys/zoo2")
    ap.add_argument("--s3rec", default="../shared/data/s3rec")
    ap.add_argument("--resamples", type=int, default=500)
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections, results = [], {}
    for name, spec in CTR_SETTINGS.items():
        text, result = ctr_table(name, spec, runs, args.resamples)
        if text:
            sections.append(text)
            results[name] = result
        if name == "longseq/L1000":
            sections.append(latency_section(out / "long_sequence_latency.json"))
    for name, spec in NEXT_ITEM_SETTINGS.items():
        text, result = next_item_table(name, spec, runs, args.s3rec, args.resamples)
        if text:
            sections.append(text)
            results[name] = result
    header = ("# Ranking zoo II\n\nRegenerate: `bash benchmarks/run_ranking_zoo2.sh` (runs) then "
              "`.venv/bin/python benchmarks/ranking_zoo2_table.py` (this file). Protocols: "
              "`benchmarks/results/recsys/zoo2/README.md`.\n")
    (out / "zoo2.md").write_text(header + "\n" + "\n\n".join(s for s in sections if s) + "\n")
    (out / "zoo2.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(json.dumps({"tables": list(results), "out": str(out / "zoo2.md")}))


if __name__ == "__main__":
    main()
