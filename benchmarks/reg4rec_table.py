"""REG4Rec's results table on Amazon Beauty: the full model, one ablation per mechanism, the baselines, and
paired bootstrap CIs over users (full model minus each row).

    python benchmarks/reg4rec_table.py --runs runs/recsys --out benchmarks/results/recsys

Reads (every folder holds seed0/, seed1/, ... with metrics.json and test_ranks.npy):
- `reg4rec_pars/`       full model: SFT → PARS with MSRA, decoded with CRSS + CORP;
- `reg4rec_pars_nomsra/` −MSRA (PARS with msra_steps 0);
- `reg4rec_sft/`        −PARS (the SFT model the PARS runs start from);
- −CORP and −CRSS: the full model's weights decoded without CORP / in the fixed expert order (computed
  here and cached as test_ranks_nocorp.npy / test_ranks_nocrss.npy beside the run);
- `tiger_mpq/`          TIGER on the same MPQ tokens (fixed expert order), all test users: its per-user
  ranks are cut to REG4Rec's test users for the paired comparison;
- `tiger_rqvae/`, `sasrec_beauty/`: TIGER on RQ-VAE codes and the SASRec baseline, if present (else
  the committed result folders under benchmarks/results/recsys/runs are read).
- MPQ's codebook statistics: `mpq_beauty/` (with the anti-collapse terms) and `mpq_beauty_plain/`
  (reconstruction + orthogonality only), or the committed first MPQ run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from shoplab_core.stats import paired_bootstrap

KEYS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
TIGER_PUBLISHED = {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}
COMMITTED = Path(__file__).resolve().parent / "results" / "recsys" / "runs"


def per_user(ranks: np.ndarray, key: str) -> np.ndarray:
    k = int(key.split("@")[1])
    hit = (ranks >= 0) & (ranks < k)
    if key.startswith("recall"):
        return hit.astype(float)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def metrics_of(ranks: np.ndarray) -> dict[str, float]:
    return {k: float(per_user(ranks, k).mean()) for k in KEYS}


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def fmt(cell: dict[str, float]) -> str:
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}" if cell["n"] > 1 else f"{cell['mean']:.4f}"


def seeds(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob("seed*/metrics.json"))


def decoded_ranks(run: Path, name: str, corp_rank: int | None = None, **switches) -> np.ndarray:
    """Test ranks of a finished REG4Rec run decoded with `switches` (and CORP's `corp_rank`), cached as
    test_ranks_<name>.npy."""
    cache = run / f"test_ranks_{name}.npy"
    if cache.exists():
        return np.load(cache)
    from recsys_core.trainer import load_run

    _, task, model = load_run(run)
    if corp_rank is not None:
        model.corp_rank = corp_rank
    ranks = task.ranks(model, "test", **switches)
    np.save(cache, ranks)
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/recsys"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recsys"))
    args = parser.parse_args()
    runs = args.runs

    full_runs = seeds(runs / "reg4rec_pars")
    if not full_runs:
        raise SystemExit(f"no finished runs under {runs / 'reg4rec_pars'} (run benchmarks/run_recsys.sh)")
    test_users = np.load(full_runs[0] / "test_users.npy")
    variants: dict[str, list[np.ndarray]] = {"REG4Rec (SFT + PARS + MSRA, CRSS, CORP)": [],
                                             "− PARS (SFT only)": [], "− MSRA (PARS, rewards for the target only)": [],
                                             "− CORP (no pruning)": [], "− CRSS (fixed expert order)": [],
                                             "CORP at rank 5 instead of 20 (threshold ablation)": []}
    names = list(variants)
    for run in full_runs:
        variants[names[0]].append(np.load(run / "test_ranks.npy"))
        variants[names[3]].append(decoded_ranks(run, "nocorp", corp=False))
        variants[names[4]].append(decoded_ranks(run, "nocrss", crss=False))
        variants[names[5]].append(decoded_ranks(run, "corp5", corp_rank=5, corp=True))
    for run in seeds(runs / "reg4rec_sft"):
        variants[names[1]].append(np.load(run / "test_ranks.npy"))
    for run in seeds(runs / "reg4rec_pars_nomsra"):
        variants[names[2]].append(np.load(run / "test_ranks.npy"))
    for run in [*full_runs, *seeds(runs / "reg4rec_sft"), *seeds(runs / "reg4rec_pars_nomsra")]:
        if not np.array_equal(np.load(run / "test_users.npy"), test_users):
            raise SystemExit(f"{run} was tested on other users: every REG4Rec run needs the same test_users/test_seed")

    tiger_runs = seeds(runs / "tiger_mpq")
    tiger_ranks = [np.load(r / "test_ranks.npy")[test_users] for r in tiger_runs if (r / "test_ranks.npy").exists()]
    if tiger_ranks:
        variants["TIGER on the same MPQ tokens (fixed order)"] = tiger_ranks

    rows, data = [], {"test_users": int(len(test_users)), "rows": {}, "paired": {}}
    full_mean = {k: np.mean([per_user(r, k) for r in variants[names[0]]], 0) for k in KEYS}
    for name, ranks_list in variants.items():
        if not ranks_list:
            continue
        cells = {k: mean_std([metrics_of(r)[k] for r in ranks_list]) for k in KEYS}
        data["rows"][name] = {"metrics": cells, "seeds": len(ranks_list)}
        paired = "–"
        if name != names[0]:
            other = np.mean([per_user(r, "ndcg@10") for r in ranks_list], 0)
            boot = paired_bootstrap(full_mean["ndcg@10"], other)
            data["paired"][name] = boot
            paired = f"{boot['diff']:+.4f} [{boot['low']:+.4f}, {boot['high']:+.4f}]"
        rows.append(f"| {name} | {' | '.join(fmt(cells[k]) for k in KEYS)} | {len(ranks_list)} | {paired} |")

    # Baselines on every test user (other protocols of the same split: not paired).
    extra = []
    for label, folder in (("TIGER on the same MPQ tokens, all 22,363 test users", runs / "tiger_mpq"),
                          ("TIGER on RQ-VAE codes, all test users", runs / "tiger_rqvae"),
                          ("SASRec (IDs, same loop), all test users", runs / "sasrec_beauty")):
        def runs_in(where: Path) -> list[dict]:  # the folder's own metrics.json and its seed*/ runs
            paths = [where / "metrics.json", *sorted(where.glob("seed*/metrics.json"))]
            return [json.loads(p.read_text()) for p in paths if p.exists()]

        found = runs_in(folder)
        if not found and (COMMITTED / folder.name).exists() and folder.resolve() != (COMMITTED / folder.name).resolve():
            found = runs_in(COMMITTED / folder.name)
            label += " (committed run)"
        if found:
            cells = {k: mean_std([f["test"][k] for f in found]) for k in KEYS}
            data["rows"][label] = {"metrics": cells, "seeds": len(found)}
            extra.append(f"| {label} | {' | '.join(fmt(cells[k]) for k in KEYS)} | {len(found)} | – |")
    extra.append(f"| TIGER (published, Beauty) | {' | '.join(f'{TIGER_PUBLISHED[k]:.4f}' for k in KEYS)} | – | – |")

    tok_rows = []
    for label, folder in (("MPQ, reconstruction + orthogonality only", runs / "mpq_beauty_plain"),
                          ("MPQ, first committed run (same terms)", COMMITTED / "mpq_beauty_v1"),
                          ("MPQ + projections, code diversity, balancing", runs / "mpq_beauty")):
        path = folder / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            stats = m["codebook_stats"]
            data.setdefault("tokenizers", {})[label] = {**stats, "recon_error": m["recon_error"]}
            tok_rows.append(f"| {label} | {stats['collision_rate']:.3f} | {stats['distinct_ids']:,} | "
                            f"{stats['utilisation_mean']:.3f} | {m['recon_error']:.4f} |")

    header = " | ".join(k.replace("recall", "R").replace("ndcg", "N") for k in KEYS)
    text = [
        "# REG4Rec on Amazon Beauty (leave-one-out, full ranking over all items)",
        "",
        f"Regenerate: `python benchmarks/reg4rec_table.py --runs runs/recsys` after `benchmarks/run_recsys.sh`. "
        f"REG4Rec rows: the same {len(test_users):,} test users (fixed sample) for every run, mean ± std over "
        "seeds; last column: full model minus the row in NDCG@10 (per-user NDCG averaged over seeds), "
        "paired bootstrap over users, mean [95% CI].",
        "",
        f"| model | {header} | seeds | Δ NDCG@10 vs full |",
        "|---|---|---|---|---|---|---|",
        *rows,
        *extra,
        "",
        "## MPQ tokens (Beauty, 12,101 items, 4 experts × 256 codes)",
        "",
        "| tokenizer | collision rate | distinct token sets | codebook utilisation | recon. error |",
        "|---|---|---|---|---|",
        *tok_rows,
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reg4rec.md").write_text("\n".join(text) + "\n")
    (args.out / "reg4rec.json").write_text(json.dumps(data, indent=2))
    print(json.dumps({"rows": {k: v["metrics"]["ndcg@10"]["mean"] for k, v in data["rows"].items()},
                      "paired": {k: v["diff"] for k, v in data["paired"].items()}}))


if __name__ == "__main__":
    main()
