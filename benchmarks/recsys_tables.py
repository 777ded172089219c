"""Collect finished recsys run folders into the results tables (markdown + JSON).

    python benchmarks/recsys_tables.py --runs runs/recsys --out benchmarks/results/recsys

Semantic IDs: per tokenizer, codebook utilisation, collision rate, reconstruction error (its own
run folder), and generative retrieval quality on Beauty (the `tiger_<tokenizer>` run folders),
next to TIGER's published Beauty numbers and the SASRec-style baseline trained by the same loop.
Ranking: AUC / GAUC / logloss of DIN, DeepFM and GPSD (scratch, transfer, transfer + freezing)
at each size. Several seeds of a run (`seed*/`) are reported as mean ± std.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TIGER_PUBLISHED = {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}
# SASRec on Beauty as reported in the TIGER paper's table (same leave-one-out protocol).
SASREC_PUBLISHED = {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318}
RETRIEVAL_KEYS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
CTR_KEYS = ("auc", "gauc", "logloss")


def run_results(folder: Path) -> list[dict]:
    """metrics.json of a run folder and of each of its seed*/ sub-folders (extra seeds of the same run)."""
    paths = [folder / "metrics.json", *sorted(folder.glob("seed*/metrics.json"))]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def fmt(cell: dict[str, float] | None, digits: int = 4) -> str:
    if not cell:
        return "–"
    if cell["n"] > 1:
        return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"
    return f"{cell['mean']:.{digits}f}"


def summarise(results: list[dict], keys: tuple[str, ...], section: str = "test") -> dict[str, dict]:
    return {k: mean_std([r[section][k] for r in results]) for k in keys if all(k in r[section] for r in results)}


def semantic_id_table(runs: Path) -> tuple[str, dict]:
    rows, data = [], {}
    for tok in ("rqvae", "mmq", "ada_sid", "mpq"):
        tok_res = run_results(runs / f"{tok}_beauty")
        gen_res = run_results(runs / f"tiger_{tok}")
        if not tok_res and not gen_res:
            continue
        stats = tok_res[0].get("codebook_stats", {}) if tok_res else {}
        retrieval = summarise(gen_res, RETRIEVAL_KEYS) if gen_res else {}
        data[tok] = {"codebook_stats": stats, "recon_error": tok_res[0].get("recon_error") if tok_res else None,
                     "retrieval": retrieval, "seeds": len(gen_res),
                     "tokenizer_seconds": tok_res[0].get("train_seconds") if tok_res else None,
                     "retriever_seconds": [r["train_seconds"] for r in gen_res]}
        recon = data[tok]["recon_error"]
        rows.append(f"| {tok} | {stats.get('utilisation_mean', float('nan')):.3f} | "
                    f"{stats.get('collision_rate', float('nan')):.3f} | "
                    f"{recon if recon is None else f'{recon:.4f}'} | "
                    + " | ".join(fmt(retrieval.get(k)) for k in RETRIEVAL_KEYS) + f" | {len(gen_res)} |")
    sas = run_results(runs / "sasrec_beauty")
    if sas:
        s = summarise(sas, RETRIEVAL_KEYS)
        data["sasrec"] = {"retrieval": s, "seeds": len(sas)}
        rows.append("| SASRec-style ID baseline (same loop) | – | – | – | "
                    + " | ".join(fmt(s.get(k)) for k in RETRIEVAL_KEYS) + f" | {len(sas)} |")
    rows.append("| TIGER (published, Beauty) | – | – | – | "
                + " | ".join(f"{TIGER_PUBLISHED[k]:.4f}" for k in RETRIEVAL_KEYS) + " | – |")
    rows.append("| SASRec (published in TIGER) | – | – | – | "
                + " | ".join(f"{SASREC_PUBLISHED[k]:.4f}" for k in RETRIEVAL_KEYS) + " | – |")
    header = ("| tokenizer | codebook utilisation | collision rate | recon. error | R@5 | N@5 | R@10 | N@10 | seeds |\n"
              "|---|---|---|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(rows), data


def ranking_table(runs: Path, s3rec: str | None = None) -> tuple[str, dict]:
    """The heuristic floors (with `s3rec`), DIN and DeepFM (ranking zoo I's converged runs, `zoo/beauty/<model>/
    seed*`, else the older `<model>_beauty`) and the GPSD grid (`gpsd_d<d>_<mode>/seed*`,
    benchmarks/run_gpsd_grid.sh), each with the mean best epoch."""
    rows, data = [], {}
    if s3rec:
        from recsys_core.data.ctr import floor_metrics, load_ctr

        beauty = load_ctr({"kind": "sequences", "source": "s3rec", "path": s3rec, "dataset": "Beauty", "max_len": 50})
        for name, f in floor_metrics(beauty).items():
            data[f"floor_{name}"] = f
            loss = "–" if f["logloss"] is None else f"{f['logloss']:.4f}"
            rows.append(f"| floor: {name.replace('_', ' ')} | – | – | {f['auc']:.4f} | {f['gauc']:.4f} | {loss} | – | – |")
    for name, label in (("din_beauty", "DIN"), ("deepfm_beauty", "DeepFM")):
        zoo = runs / "zoo" / "beauty" / name.split("_")[0]
        res = run_results(zoo) or run_results(runs / name)
        if res:
            s = summarise(res, CTR_KEYS)
            data[name] = {"test": s, "seeds": len(res), "samples_per_s": res[0].get("train_samples_per_s"),
                          "best_epoch": [r.get("best_epoch") for r in res]}
            rows.append(f"| {label} | – | – | " + " | ".join(fmt(s.get(k)) for k in CTR_KEYS)
                        + f" | {statistics.fmean(r['best_epoch'] for r in res):.1f} | {len(res)} |")
    for folder in sorted(runs.glob("gpsd_d*_*"), key=lambda f: (int(f.name.split("_")[1][1:]), f.name)):
        size, mode = folder.name.split("_")[1], folder.name.split("_", 2)[2]
        res = run_results(folder)
        if not res:
            continue
        s = summarise(res, CTR_KEYS)
        params = res[0].get("parameters", {})
        data[folder.name] = {"test": s, "seeds": len(res), "parameters": params,
                             "samples_per_s": res[0].get("train_samples_per_s"),
                             "best_epoch": [r.get("best_epoch") for r in res],
                             "train_valid_auc_gap": [r.get("train_auc", float("nan")) - r["valid"]["auc"]
                                                     for r in res if "auc" in r.get("valid", {})]}
        rows.append(f"| GPSD {mode} | {size} | {params.get('dense', '–')} | "
                    + " | ".join(fmt(s.get(k)) for k in CTR_KEYS)
                    + f" | {statistics.fmean(r['best_epoch'] for r in res):.1f} | {len(res)} |")
    header = ("| model | size | dense params | AUC | GAUC | logloss | best epoch | seeds |\n"
              "|---|---|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(rows), data


def throughput_table(runs: Path) -> tuple[str, dict]:
    """CPU training throughput of every run (one thread, two runs side by side on the 2 cores)."""
    rows, data = [], {}
    for metrics in sorted(runs.glob("*/metrics.json")):
        r = json.loads(metrics.read_text())
        unit = {"next_item": "predicted items", "generative_retrieval": "predicted items",
                "gpsd_pretrain": "predicted items", "semantic_id": "items", "ctr": "samples"}.get(r["task"], "samples")
        data[metrics.parent.name] = {"model": r["model"], "task": r["task"], "samples_per_s": r["train_samples_per_s"],
                                     "train_seconds": r["train_seconds"], "epochs": r["epochs_run"],
                                     "parameters": r["parameters"]["total"]}
        rows.append(f"| {metrics.parent.name} | {r['model']} | {r['task']} | {r['train_samples_per_s']:,.0f} {unit}/s | "
                    f"{r['epochs_run']} | {r['train_seconds']:.0f} | {r['parameters']['total']:,} |")
    header = ("| run | model | task | throughput | epochs | train s | parameters |\n|---|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(rows), data


def plot_gpsd_scaling(rank: dict, path: Path) -> None:
    """Test AUC against dense parameters for scratch / full transfer / sparse transfer + freezing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"nt": "scratch (NT)", "ft": "full transfer (FT)", "stsf": "sparse transfer + freeze (ST&SF)"}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode, label in labels.items():
        points = sorted((v["parameters"]["dense"], v["test"]["auc"]["mean"], v["test"]["auc"]["std"])
                        for k, v in rank.items() if k.startswith("gpsd_d") and k.endswith(f"_{mode}"))
        if points:
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    for name, label in (("din_beauty", "DIN"), ("deepfm_beauty", "DeepFM")):
        if name in rank:
            ax.axhline(rank[name]["test"]["auc"]["mean"], ls="--", lw=0.8, color="grey")
            ax.text(6e4, rank[name]["test"]["auc"]["mean"] + 0.001, label, fontsize=7)
    ax.set_xscale("log")
    sizes = sorted({(v["parameters"]["dense"], k.split("_")[1]) for k, v in rank.items() if k.startswith("gpsd_d")})
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([n for n, _ in sizes], [f"{d}\n{n / 1000:.0f}k" for n, d in sizes])
    ax.set_xlabel("model size (dense parameters)")
    ax.set_ylabel("test AUC (Beauty CTR)")
    ax.set_title("GPSD on Amazon Beauty: transfer vs scratch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/recsys")
    ap.add_argument("--out", default="benchmarks/results/recsys")
    ap.add_argument("--tables", nargs="+", default=["semantic_ids", "ranking", "throughput"],
                    choices=["semantic_ids", "ranking", "throughput"],
                    help="rebuild only these tables (the others, and their part of tables.json, stay as they are)")
    ap.add_argument("--s3rec", default=None, help="the S3-Rec folder: adds the heuristic floors to the ranking table")
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    builders = {"semantic_ids": semantic_id_table, "ranking": lambda r: ranking_table(r, args.s3rec),
                "throughput": throughput_table}
    merged = json.loads((out / "tables.json").read_text()) if (out / "tables.json").exists() else {}
    for name in args.tables:
        md, data = builders[name](runs)
        (out / f"{name}.md").write_text(md + "\n")
        merged[name] = data
        if name == "ranking":
            plot_gpsd_scaling(data, out / "gpsd_scaling.png")
        print(md)
    (out / "tables.json").write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
