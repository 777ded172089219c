"""CoCo's results table on MovieLens-1M CTR: heuristic floors, backbone alone, KAR-style knowledge, CoCo and
one ablation per mechanism, per backbone; mean ± std over seeds and a paired bootstrap over users.

    python benchmarks/coco_table.py --runs runs/recsys/coco --out benchmarks/results/recsys/coco

Reads `<runs>/<backbone>_<row>_s<seed>/` (metrics.json, test_pred*.npy, test_labels.npy, test_users.npy),
written by `benchmarks/run_coco.sh`. The CoCo rows' LoRA stage (contradiction resolution, with and without
gradient masking) lives inside the `coco` runs (metrics.json["resolution"], test_pred_<variant>.npy).
The paired bootstrap resamples test users (the same resample for every seed) and reports the seed-mean
ΔAUC between two rows on the seeds both have, with a 95% interval: CoCo and KAR against the backbone, CoCo
against each ablation, the LoRA stage against the frozen model and masked against unmasked.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from recsys_core.metrics import bootstrap_delta

ROWS = (  # (key, run name, prediction file, label)
    ("none", "none", "test_pred.npy", "backbone alone"),
    ("fixed", "fixed", "test_pred.npy", "KAR-style fixed template (frozen LLM, one prompt for all)"),
    ("coco", "coco", "test_pred.npy", "CoCo, frozen LLM (VQ prompts + cross-attention + InfoNCE)"),
    ("coco_lora", "coco", "test_pred_masked.npy", "CoCo full (+ LoRA with gradient masking)"),
    ("coco_lora_nomask", "coco", "test_pred_unmasked.npy", "− gradient masking (LoRA learns from every sample)"),
    ("novq", "novq", "test_pred.npy", "− VQ prompts (one learned prompt for all)"),
    ("noinfonce", "noinfonce", "test_pred.npy", "− InfoNCE"),
)


SHORT = {"none": "backbone", "fixed": "KAR-style", "coco": "CoCo (frozen LLM)", "coco_lora": "CoCo + LoRA, masked",
         "coco_lora_nomask": "CoCo + LoRA, unmasked", "novq": "CoCo − VQ", "noinfonce": "CoCo − InfoNCE"}
PAIRS = (("coco", "none"), ("fixed", "none"), ("coco", "fixed"), ("coco", "novq"), ("coco", "noinfonce"),
         ("coco_lora", "coco"), ("coco_lora", "coco_lora_nomask"))


def cell(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def fmt(c: dict[str, float] | None) -> str:
    if not c:
        return "–"
    return f"{c['mean']:.4f} ± {c['std']:.4f}" if c["n"] > 1 else f"{c['mean']:.4f}"


def floors() -> dict[str, dict[str, float]]:
    from recsys_core.data.ctr import ctr_from_movielens, floor_metrics
    from recsys_core.data.movielens import load_movielens

    return floor_metrics(ctr_from_movielens(load_movielens()), "test", match_fields=(1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/recsys/coco")
    ap.add_argument("--out", default="benchmarks/results/recsys/coco")
    ap.add_argument("--resamples", type=int, default=500)
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"floors": floors(), "backbones": {}}
    lines = ["# CoCo on MovieLens-1M CTR", "",
             "Test split of the time-ordered 80/10/10 protocol (rating ≥ 4 = click; `recsys_core/data/movielens.py`).",
             "Regenerate: `bash benchmarks/run_coco.sh` (runs + this table) or "
             "`python benchmarks/coco_table.py --runs runs/recsys/coco`.", "",
             "| heuristic floor | AUC | GAUC | logloss |", "|---|---|---|---|"]
    for name, m in result["floors"].items():
        ll = f"{m['logloss']:.4f}" if m["logloss"] is not None else "–"
        lines.append(f"| {name} | {m['auc']:.4f} | {m['gauc']:.4f} | {ll} |")
    for backbone in ("deepfm", "din"):
        table: dict = {}
        preds_of: dict[str, dict[int, np.ndarray]] = {}  # row -> seed -> test predictions
        labels = users = None
        for key, run_name, pred_file, label in ROWS:
            metrics, extra, preds = [], {}, {}
            for f in sorted(runs.glob(f"{backbone}_{run_name}_s*/metrics.json")):
                m = json.loads(f.read_text())
                seed = int(f.parent.name.rsplit("_s", 1)[1])
                if pred_file == "test_pred.npy":
                    metrics.append(m["test"])
                else:
                    variant = pred_file.removeprefix("test_pred_").removesuffix(".npy")
                    res = m.get("resolution", {}).get(variant)
                    if res is None:
                        continue
                    metrics.append(res["test"])
                    for name in ("seconds", "hurt_share", "best_step"):
                        extra.setdefault(f"lora_{name}", []).append(res[name])
                if (f.parent / pred_file).exists():
                    preds[seed] = np.load(f.parent / pred_file)
                    labels = np.load(f.parent / "test_labels.npy")
                    users = np.load(f.parent / "test_users.npy")
                if key == "coco" and "prompt_usage" in m:
                    extra.setdefault("prompt_usage", []).append(m["prompt_usage"])
                extra.setdefault("train_seconds", []).append(m["train_seconds"])
                extra.setdefault("best_epoch", []).append(m["best_epoch"])
            if not metrics:
                continue
            preds_of[key] = preds
            table[key] = {"label": label, "seeds": len(metrics),
                          **{k: cell([x[k] for x in metrics]) for k in ("auc", "gauc", "logloss")}, **extra}
        if not table:
            continue
        comparisons = []
        for a, b in PAIRS:
            common = sorted(set(preds_of.get(a, {})) & set(preds_of.get(b, {})))
            if common:
                delta = bootstrap_delta([preds_of[a][s] for s in common], [preds_of[b][s] for s in common],
                                        labels, users, args.resamples)
                comparisons.append({"a": a, "b": b, "seeds": common, **delta})
        result["backbones"][backbone] = {"rows": table, "paired": comparisons}
        lines += ["", f"## Backbone: {backbone.upper() if backbone == 'din' else 'DeepFM'}", "",
                  "| row | seeds | AUC | GAUC | logloss |", "|---|---|---|---|---|"]
        for row in table.values():
            lines.append(f"| {row['label']} | {row['seeds']} | {fmt(row['auc'])} | {fmt(row['gauc'])} | "
                         f"{fmt(row['logloss'])} |")
        lines += ["", "Paired bootstrap over test users (seed-mean ΔAUC on the seeds both rows have, 95% interval):", ""]
        for c in comparisons:
            lines.append(f"- {SHORT[c['a']]} vs {SHORT[c['b']]}: {c['delta_auc']:+.4f} "
                         f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (seeds {c['seeds']})")
    (out / "coco.json").write_text(json.dumps(result, indent=1))
    (out / "coco.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({"backbones": {b: {k: round(r["auc"]["mean"], 4) for k, r in t["rows"].items()}
                                    for b, t in result["backbones"].items()}}))


if __name__ == "__main__":
    main()
