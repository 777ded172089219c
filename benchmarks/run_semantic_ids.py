"""Semantic-ID ablations on MovieLens-1M and Amazon Beauty (MMQ's behaviour-aware stage, ADA-SID's router).

Every row is a tokenizer (configs/recsys/<dataset>_sid/) trained with each tokenizer seed, then a TIGER retriever
(configs/recsys/<dataset>_sid/tiger.yaml) trained on its codes with each retriever seed. Two jobs run side by side
(one thread each, niced); a finished run (metrics.json present) is skipped, so the script resumes. Retrievers
run seed by seed: every row gets retriever seed 0 before any gets seed 1.

    .venv/bin/python benchmarks/run_semantic_ids.py                    # MovieLens-1M: 3 tokenizer x 3 retriever seeds
    .venv/bin/python benchmarks/run_semantic_ids.py --retriever-seeds 0 1 --rows rqvae4 mmq
    .venv/bin/python benchmarks/run_semantic_ids.py --dataset beauty --s3rec ../shared/data/s3rec \
        --tokenizer-seeds 0 1 --retriever-seeds 0                     # Beauty: the equal-length main rows
    .venv/bin/python benchmarks/semantic_id_table.py [--dataset beauty]  # the table

Runs go under runs/recsys/<dataset>_sid/<row>/tok<seed>/ (tokenizer) and .../tok<seed>/tiger<seed>/ (retriever).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIGS = Path("configs/recsys")
# rows a plain run trains, per dataset: every ablation on MovieLens-1M; on Beauty (a TIGER run is ~4x longer on
# the CPU) the equal-length comparison and MMQ without its stage 2
DEFAULT_ROWS = {"ml1m": None, "beauty": ["rqvae4", "mmq", "ada_sid", "mmq_no_stage2"]}
# row: (tokenizer config, tokenizer overrides, retriever overrides, tokenizer row it reuses or None)
ROWS: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "rqvae": ("rqvae.yaml", [], [], None),
    "rqvae4": ("rqvae4.yaml", [], [], None),
    "mmq": ("mmq.yaml", [], [], None),
    "mmq_no_orth": ("mmq.yaml", ["model_params.orth_weight=0"], [], None),
    "mmq_no_stage2": ("mmq.yaml", ["task_params.behaviour_finetune_epochs=0", "train.epochs=150"], [], None),
    "mmq_no_aux": ("mmq.yaml", ["model_params.aux_weight=0"], [], None),
    "ada_sid": ("ada_sid.yaml", [], [], None),
    "ada_sid_flat_richness": ("ada_sid.yaml", ["model_params.richness_adaptive=false"], [], None),
    "ada_sid_no_router": ("ada_sid.yaml", ["model_params.use_router=false"], [], None),
    # the full ADA-SID tokenizer, its router weights left out of the retriever
    "ada_sid_router_not_downstream": ("ada_sid.yaml", [], ["task_params.router_scales=false"], "ada_sid"),
}


def run(cmd: list[str], log: Path) -> tuple[float, int]:
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(["nice", "-n", "5", *cmd], stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started, code


def train_cmd(bin_dir: Path, config: Path, out_dir: Path, sets: list[str]) -> list[str]:
    cmd = [str(bin_dir / "shoplab"), "recsys", "train", "--config", str(config), "--out-dir", str(out_dir),
           "--set", "train.progress=false"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DEFAULT_ROWS), default="ml1m")
    parser.add_argument("--s3rec", type=Path, default=None,
                        help="folder of the S3-Rec files (Beauty; default: the path in the configs)")
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS))
    parser.add_argument("--tokenizer-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--retriever-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/recsys/<dataset>_sid")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--bin", type=Path, default=Path(".venv/bin"))
    args = parser.parse_args()
    args.rows = args.rows or DEFAULT_ROWS[args.dataset] or list(ROWS)
    args.runs = args.runs or Path("runs/recsys") / f"{args.dataset}_sid"
    configs = CONFIGS / f"{args.dataset}_sid"
    data_sets = [f"data.path={args.s3rec}"] if args.s3rec else []

    def tokenizer_dir(row: str, seed: int) -> Path:
        reuse = ROWS[row][3]
        return args.runs / (reuse or row) / f"tok{seed}"

    def tokenizer_job(row: str, seed: int):
        config, sets, _, _ = ROWS[row]
        out = tokenizer_dir(row, seed)
        if (out / "metrics.json").exists():
            return row, seed, None, 0, 0.0
        seconds, code = run(train_cmd(args.bin, configs / config, out, [*data_sets, *sets, f"train.seed={seed}"]),
                            out.parent / f"tok{seed}.log")
        return row, seed, None, code, seconds

    def retriever_job(row: str, seed: int, retriever_seed: int):
        tok = tokenizer_dir(row, seed)
        out = args.runs / row / f"tok{seed}" / f"tiger{retriever_seed}"
        if (out / "metrics.json").exists():
            return row, seed, retriever_seed, 0, 0.0
        if not (tok / "codes.npy").exists():
            return row, seed, retriever_seed, -1, 0.0
        sets = [*data_sets, f"data.sid_run={tok}", f"train.seed={retriever_seed}", *ROWS[row][2]]
        seconds, code = run(train_cmd(args.bin, configs / "tiger.yaml", out, sets), out.parent / f"tiger{retriever_seed}.log")
        return row, seed, retriever_seed, code, seconds

    failures = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        owners = [(r, s) for s in args.tokenizer_seeds for r in args.rows if ROWS[r][3] is None
                  or ROWS[r][3] not in args.rows]
        jobs = [pool.submit(tokenizer_job, r, s) for r, s in owners]
        for job in jobs:
            row, seed, _, code, seconds = job.result()
            print(f"tokenizer {row} seed {seed}: {'ok' if code == 0 else f'FAILED ({code})'} {seconds:.0f} s",
                  flush=True)
            failures += code != 0
        jobs = [pool.submit(retriever_job, r, s, rs) for rs in args.retriever_seeds for s in args.tokenizer_seeds
                for r in args.rows]
        for job in jobs:
            row, seed, rs, code, seconds = job.result()
            print(f"tiger {row} tok{seed} seed {rs}: {'ok' if code == 0 else f'FAILED ({code})'} {seconds:.0f} s",
                  flush=True)
            failures += code != 0
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
