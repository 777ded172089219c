"""Serving cost of target attention over long histories: one ranking request = one user history of L
behaviours and N candidates, scored on one CPU thread (ML-1M's field sizes; latency does not depend on the
weights, so the models are untrained).

Rows, all in the same process and the same run:
- `din`: DIN's activation unit (an MLP per behaviour and candidate), O(N·L) MLP calls;
- `full`: softmax target attention over all L behaviours (`lrta` with rank 0), the history's keys and values
  projected once per request, then N·L dot products;
- `lowrank_request`: low-rank attention, the r-slot compression computed once for the request, then
  absorbed scoring (`prestore` + `score_prestored`), O(L + N·r);
- `lowrank_prestored`: the compression pre-stored offline (the paper's serving), absorbed scoring only, O(N·r).
Every row includes the same MLP head over the N candidates; `*_attention_only_ms` time the attention alone
(full over L vs pre-stored over r), which is what the low-rank method changes.

    .venv/bin/python benchmarks/bench_long_sequence.py            # L = 50, 200, 1000, 2000; N = 200
Prints one JSON line; writes benchmarks/results/recsys/zoo2/long_sequence_latency.{json,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_store_filter import timed  # median ms after a warm-up: the same timer as STORE's bench

from recsys_core.models.din.model import DIN
from recsys_core.models.lrta.model import LowRankTargetAttention

ITEM_FIELDS = [3884, 19, 19, 20]  # ML-1M: movie, genre1, genre2, year5
OUT = Path(__file__).resolve().parent / "results" / "recsys" / "zoo2"


def full_attention_request(model: LowRankTargetAttention, hist: torch.Tensor, cands: torch.Tensor,
                           head: bool = True) -> torch.Tensor:
    """Full softmax target attention served fairly: K, V of the one history once, then every candidate
    (`head=False`: the pooled interest only, the attention's own cost)."""
    h, c = model.features.flat(hist[0]), model.features.flat(cands)
    weights = torch.softmax(model.w_q(c) @ model.w_k(h).T / model.attn_dim ** 0.5, -1)
    interest = model.w_o(weights @ model.w_v(h))
    return model._head(interest, c, {"cand_fields": cands}) if head else interest


def prestored_attention(model: LowRankTargetAttention, stored: dict, cands: torch.Tensor) -> torch.Tensor:
    """The pre-stored, absorbed low-rank attention without the head: the pooled interest of every candidate."""
    c = model.features.flat(cands)
    return torch.softmax(c @ stored["keys"][0].T, -1) @ stored["values"][0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000, 2000])
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    din = DIN(ITEM_FIELDS, max_len=max(args.lengths), embed_dim=16, attention_hidden=(80, 40)).eval()
    full = LowRankTargetAttention(ITEM_FIELDS, max_len=1, rank=0).eval()
    low = LowRankTargetAttention(ITEM_FIELDS, max_len=1, rank=args.rank).eval()
    n = args.candidates
    cands = torch.stack([torch.randint(1, s, (n,)) for s in ITEM_FIELDS], -1)
    rows = []
    for length in args.lengths:
        hist = torch.stack([torch.randint(1, s, (1, length)) for s in ITEM_FIELDS], -1)
        batch = {"hist_fields": hist.expand(n, -1, -1), "cand_fields": cands}
        stored = low.prestore(hist)
        with torch.inference_mode():
            row = {"L": length, "N": n, "rank": args.rank,
                   "din_ms": timed(lambda b=batch: din(b), args.repeats),
                   "full_ms": timed(lambda h=hist: full_attention_request(full, h, cands), args.repeats),
                   "lowrank_request_ms": timed(lambda h=hist: low.score_prestored(low.prestore(h), 0, cands),
                                               args.repeats),
                   "lowrank_prestored_ms": timed(lambda s=stored: low.score_prestored(s, 0, cands), args.repeats),
                   "full_attention_only_ms": timed(lambda h=hist: full_attention_request(full, h, cands, head=False),
                                                   args.repeats),
                   "lowrank_attention_only_ms": timed(lambda s=stored: prestored_attention(low, s, cands),
                                                      args.repeats)}
        row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        row["full_over_prestored"] = round(row["full_ms"] / row["lowrank_prestored_ms"], 1)
        row["attention_only_ratio"] = round(row["full_attention_only_ms"] / row["lowrank_attention_only_ms"], 1)
        rows.append(row)
    result = {"bench": "long_sequence_latency", "threads": 1, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "long_sequence_latency.json").write_text(json.dumps(result, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("din_ms", "DIN activation unit"), ("full_ms", "full softmax target attention"),
                       ("lowrank_request_ms", f"low-rank r={args.rank}, compressed per request"),
                       ("lowrank_prestored_ms", f"low-rank r={args.rank}, pre-stored + absorbed")):
        ax.plot([r["L"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="history length L", ylabel=f"ms per request ({n} candidates)",
           title="Serving cost of target attention (1 CPU thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "long_sequence_latency.png", dpi=120)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
