"""STORE's token filter: forward and training-step time with and without it, in the same process.

    python benchmarks/bench_store_filter.py [--repeats 20]

An untrained STORE on synthetic MovieLens-shaped batches (5 user fields, 4 item fields; user id, movie id
tokenised into 3 codes), one thread, batch 256, d = 32. For each depth and history length, keep_ratio 1.0
(every token through every layer: the baseline) against 0.5 and 0.25; the speed-up is the baseline's median
time over the filtered one's. Prints one JSON line and writes benchmarks/results/recsys/zoo/store_filter.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recsys_core.models.store import STORE


def batch(n: int, hist_len: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    item_vocab, user_vocab = [3884, 19, 19, 19], [6041, 3, 8, 22, 679]
    cand = np.stack([rng.integers(1, v, n) for v in item_vocab], 1)
    hist = np.stack([rng.integers(1, v, (n, hist_len)) for v in item_vocab], -1)
    users = np.stack([rng.integers(1, v, n) for v in user_vocab], 1)
    return {"cand_fields": torch.from_numpy(cand), "hist_fields": torch.from_numpy(hist),
            "user_fields": torch.from_numpy(users), "label": torch.from_numpy(rng.integers(0, 2, n).astype(np.float32))}


def model(layers: int, hist_len: int, keep: float) -> STORE:
    rng = np.random.default_rng(0)
    codes = {"field0": rng.integers(1, 65, (6041, 3)), "field5": rng.integers(1, 65, (3884, 3))}
    torch.manual_seed(0)
    return STORE([3884, 19, 19, 19], max_len=hist_len, user_field_vocab_sizes=[6041, 3, 8, 22, 679],
                 semantic_codes=codes, layers=layers, keep_ratio=keep)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/recsys/zoo/store_filter.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for layers in (2, 4):
        for hist_len in (30, 200):
            b = batch(256, hist_len, rng)
            row = {"layers": layers, "history": hist_len}
            for keep in (1.0, 0.5, 0.25):
                net = model(layers, hist_len, keep)
                net.eval()
                with torch.no_grad():
                    forward = timed(lambda net=net, b=b: net(b), args.repeats)
                net.train()
                opt = torch.optim.SGD(net.parameters(), lr=0.0)

                def step(net=net, opt=opt, b=b):
                    opt.zero_grad()
                    net.loss(b).backward()

                train = timed(step, max(3, args.repeats // 4))
                row[f"keep{keep}"] = {"forward_ms": round(forward, 2), "train_step_ms": round(train, 2)}
            base = row["keep1.0"]
            for keep in (0.5, 0.25):
                row[f"keep{keep}"]["forward_speedup"] = round(base["forward_ms"] / row[f"keep{keep}"]["forward_ms"], 2)
                row[f"keep{keep}"]["train_speedup"] = round(base["train_step_ms"] / row[f"keep{keep}"]["train_step_ms"], 2)
            rows.append(row)
    out = {"benchmark": "store_token_filter", "batch": 256, "d_model": 32, "threads": 1, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
