"""Ranking zoo I tables: one per dataset (Amazon Beauty CTR, MovieLens-1M CTR), from the run folders of
`benchmarks/run_ranking_zoo.sh` and `benchmarks/run_gpsd_grid.sh`.

    python benchmarks/ranking_zoo_table.py --runs runs/recsys --out benchmarks/results/recsys/zoo

Rows: the heuristic floors (computed here from the data), DIN, DeepFM, GPSD (scratch / full transfer / sparse
transfer + freezing per size; Beauty), STORE, SGCTR, DGenCTR and MATT around DIN / DeepFM / GPSD, then one
ablation per mechanism (STORE's three, SGCTR's generative loss and its refinement at training and at inference,
DGenCTR's pre-training, MATT's paths and orders). Cells are mean ± std over seeds (early stopping on valid AUC
in every trained run: best epoch and epochs run are reported). Each method is compared with its base by a
paired bootstrap over test users on the seeds both have (500 resamples, 95% interval of the seed-mean ΔAUC),
using the test predictions every run saves (`test_predictions*.npz`, one sample order per dataset).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from recsys_core.metrics import bootstrap_delta

DATASETS = {
    "beauty": {"title": "Amazon Beauty CTR", "match_fields": (1,),
               "data": {"kind": "sequences", "source": "s3rec", "dataset": "Beauty", "max_len": 50, "eval_seed": 0}},
    "ml1m": {"title": "MovieLens-1M CTR", "match_fields": (1, 2), "data": {"kind": "movielens", "max_len": 30}},
}
# (row key, folder under zoo/<dataset>/ or a path under runs/, prediction variant or None, label, base row key)
ROWS = (
    ("din", "din", None, "DIN", None),
    ("deepfm", "deepfm", None, "DeepFM", None),
    *[(f"gpsd_d{d}_{m}", f"../../gpsd_d{d}_{m}", None, f"GPSD d={d} {label}", f"gpsd_d{d}_nt" if m != "nt" else None)
      for d in (32, 64, 128) for m, label in (("nt", "scratch (NT)"), ("ft", "full transfer (FT)"),
                                                ("stsf", "sparse transfer + freeze (ST&SF)"))],
    ("store", "store", None, "STORE", "din"),
    ("sgctr", "sgctr", None, "SGCTR", "deepfm"),
    ("dgenctr", "dgenctr", None, "DGenCTR (diffusion pre-training → CTR fine-tuning)", "dgenctr_scratch"),
    ("matt_din", "matt_din", None, "MATT ∘ DIN (8 paths, orders 1-3)", "din"),
    ("matt_deepfm", "matt_deepfm", None, "MATT ∘ DeepFM", "deepfm"),
    ("matt_gpsd", "matt_gpsd", None, "MATT ∘ GPSD d=32 NT", "gpsd_d32_nt"),
    # ablations: one mechanism off
    ("store_no_semantic", "store_no_semantic", None, "STORE − semantic tokens (raw id embeddings)", "store"),
    ("store_no_rotation", "store_no_rotation", None, "STORE − orthogonal rotation", "store"),
    ("store_keep_all", "store_keep_all", None, "STORE − token filter (keep every token)", "store"),
    ("sgctr_no_refine_eval", "sgctr", "no_refine", "SGCTR − refinement at inference (same weights)", "sgctr"),
    ("sgctr_no_refine_train", "sgctr_no_refine_train", None, "SGCTR − refinement in training and inference",
     "sgctr"),
    ("sgctr_no_generative", "sgctr_no_generative", None, "SGCTR − masked generative loss", "sgctr"),
    ("dgenctr_scratch", "dgenctr_scratch", None, "DGenCTR − pre-training (same model from scratch)", None),
    *[(f"matt_din_{v}", "matt_din", v, f"MATT ∘ DIN, {label}", "matt_din")
      for v, label in (("paths2", "2 paths"), ("paths4", "4 paths"), ("paths16", "16 paths"),
                       ("orders1-1", "order 1 only"), ("orders1-2", "orders 1-2"))],
)


def seed_runs(folder: Path) -> dict[int, Path]:
    out = {}
    for seed_dir in sorted(folder.glob("seed*")):
        if (seed_dir / "metrics.json").exists() and seed_dir.name[4:].isdigit():
            out[int(seed_dir.name[4:])] = seed_dir
    return out


def cell(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def fmt(c: dict[str, float] | None, digits: int = 4) -> str:
    if not c:
        return "–"
    return f"{c['mean']:.{digits}f} ± {c['std']:.{digits}f}" if c["n"] > 1 else f"{c['mean']:.{digits}f}"


def predictions(run: Path, variant: str | None, predict_missing: bool = False) -> dict[str, np.ndarray] | None:
    """A run's saved test predictions; with `predict_missing`, a run saved before runs kept them (the GPSD grid
    of an older checkout) is loaded and predicted once, and the file written next to it."""
    path = run / (f"test_predictions_{variant}.npz" if variant else "test_predictions.npz")
    if not path.exists() and predict_missing and variant is None:
        from recsys_core.tasks.ctr import save_predictions
        from recsys_core.trainer import load_run

        _, task, model = load_run(run)
        save_predictions(path, *task.predict(model, "test"))
    return dict(np.load(path)) if path.exists() else None


def collect_row(zoo: Path, folder: str, variant: str | None, predict_missing: bool = False) -> dict:
    runs = seed_runs((zoo / folder).resolve())
    metrics, preds = {}, {}
    for seed, run in runs.items():
        m = json.loads((run / "metrics.json").read_text())
        if variant:
            if variant not in m.get("variants", {}):
                continue
            m = {**m, "test": m["variants"][variant]["test"]}
        metrics[seed] = m
        p = predictions(run, variant, predict_missing)
        if p is not None:
            preds[seed] = p
    return {"metrics": metrics, "preds": preds}


def floors(dataset: dict, s3rec: str) -> dict[str, dict[str, float]]:
    from recsys_core.data.ctr import floor_metrics, load_ctr

    data_cfg = dict(dataset["data"])
    if data_cfg["kind"] == "sequences":
        data_cfg["path"] = s3rec
    return floor_metrics(load_ctr(data_cfg), "test", dataset["match_fields"])


def dataset_table(name: str, runs: Path, s3rec: str, resamples: int, predict_missing: bool = False
                  ) -> tuple[str, dict]:
    spec = DATASETS[name]
    zoo = runs / "zoo" / name
    rows = {key: collect_row(zoo, folder, variant, predict_missing) for key, folder, variant, _, _ in ROWS
            if name == "beauty" or "gpsd" not in key}  # the GPSD grid runs on Beauty only
    if not any(r["metrics"] for r in rows.values()):
        return "", {}
    lines = [f"### {spec['title']}", "",
             "| model | AUC | GAUC | logloss | seeds | best epoch / run | train samples/s | Δ AUC vs base [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    out: dict = {"floors": floors(spec, s3rec), "rows": {}}
    for fname, f in out["floors"].items():
        loss = "–" if f["logloss"] is None else f"{f['logloss']:.4f}"
        lines.append(f"| floor: {fname.replace('_', ' ')} | {f['auc']:.4f} | {f['gauc']:.4f} | {loss} | – | – | – | – |")
    for key, _, variant, label, base in ROWS:
        row = rows.get(key)
        if not row or not row["metrics"]:
            continue
        ms = list(row["metrics"].values())
        stats = {k: cell([m["test"].get(k) for m in ms]) for k in ("auc", "gauc", "logloss")}
        epochs = f"{statistics.fmean([m['best_epoch'] for m in ms]):.1f} / {statistics.fmean([m['epochs_run'] for m in ms]):.1f}"
        speed = cell([m.get("train_samples_per_s") for m in ms if m.get("epochs_run")])
        delta = None
        if base and rows.get(base, {}).get("preds"):
            common = sorted(set(row["preds"]) & set(rows[base]["preds"]))
            if common:
                ref = rows[base]["preds"][common[0]]
                delta = bootstrap_delta([row["preds"][s]["prob"] for s in common],
                                        [rows[base]["preds"][s]["prob"] for s in common],
                                        ref["label"], ref["user"], n=resamples)
                delta["seeds"] = common
                delta["base"] = base
        out["rows"][key] = {"label": label, "test": stats, "seeds": sorted(row["metrics"]), "epochs": epochs,
                            "train_samples_per_s": speed, "vs_base": delta}
        delta_txt = "–"
        if delta:
            delta_txt = (f"{delta['delta_auc']:+.4f} [{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}] vs "
                         f"{base} ({len(delta['seeds'])} seeds)")
        trained = variant is None and not key.startswith("matt")  # MATT and variants train nothing themselves
        speed_txt = f"{speed['mean']:,.0f}" if trained and speed else "–"
        lines.append(f"| {label} | {fmt(stats['auc'])} | {fmt(stats['gauc'])} | {fmt(stats['logloss'])} | "
                     f"{len(ms)} | {epochs if trained else '–'} | {speed_txt} | {delta_txt} |")
    return "\n".join(lines), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/recsys")
    ap.add_argument("--out", default="benchmarks/results/recsys/zoo")
    ap.add_argument("--s3rec", default="../shared/data/s3rec")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--predict-missing", action="store_true",
                    help="load and predict runs that have no saved test predictions (older checkouts)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables, data = [], {}
    for name in args.datasets:
        table, result = dataset_table(name, Path(args.runs), args.s3rec, args.resamples, args.predict_missing)
        if table:
            tables.append(table)
            data[name] = result
    (out / "zoo.md").write_text("\n\n".join(tables) + "\n")
    (out / "zoo.json").write_text(json.dumps(data, indent=2))
    print(json.dumps({"datasets": list(data), "rows": {k: len(v["rows"]) for k, v in data.items()}}))


if __name__ == "__main__":
    main()
