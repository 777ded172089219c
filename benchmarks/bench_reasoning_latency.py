"""Latency of one REG4Rec recommendation with its reasoning paths (k = 10, beam 20, one user per call, as
the agent tool serves it), with and without CORP, beside TIGER's `recommend` on the same histories.

    python benchmarks/bench_reasoning_latency.py --run runs/recsys/reg4rec_pars/seed0 \
        --tiger runs/recsys/tiger_mpq/seed0 --users 200

Prints one JSON line and writes benchmarks/results/recsys/reasoning_latency.json. Target: p50 < 50 ms
on this 2-core CPU (one torch thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, histories) -> dict[str, float]:
    fn(histories[0])  # warm-up
    times = []
    for history in histories:
        started = time.perf_counter()
        fn(history)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p90_ms": round(float(np.percentile(times, 90)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2), "calls": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A finished reasoning_retrieval (reg4rec) run.")
    parser.add_argument("--tiger", type=Path, help="A finished generative_retrieval run on the same data (baseline).")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recsys/reasoning_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from recsys_core.data.sequences import split_inputs
    from recsys_core.trainer import load_run

    _, task, model = load_run(args.run)
    histories, _ = split_inputs(task.data, "test")
    picks = np.random.default_rng(0).choice(len(histories), min(args.users, len(histories)), replace=False)
    sample = [histories[i] for i in picks]
    beam = max(task.beam_size, args.k)

    def reg4rec(corp: bool):
        return lambda h: model.beam_search(task.history_items([h]), beam, corp=corp)

    result = {"bench": "reasoning_latency", "k": args.k, "beam": beam, "items": int(task.data.n_items),
              "reg4rec_crss_corp": timed(reg4rec(True), sample), "reg4rec_crss_no_corp": timed(reg4rec(False), sample),
              "threads": 1, "machine": platform.processor() or platform.machine()}
    if args.tiger:
        _, tiger_task, tiger = load_run(args.tiger)
        result["tiger"] = timed(lambda h: tiger_task.recommend(tiger, [int(x) for x in h], args.k), sample)
        result["ratio_vs_tiger_p50"] = round(result["reg4rec_crss_corp"]["p50_ms"] / result["tiger"]["p50_ms"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
