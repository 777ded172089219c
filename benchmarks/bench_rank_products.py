"""Latency of the `rank_products` service call: 100 candidates after a 20-item history, one call at a
time on the CPU, after a warm-up. Modes, all on the same random (candidates, history) draws:

  service            RecsysService.rank_products end to end (input checks, fields from the item table, one
                     batched forward pass of the service's ranker, DIN by default, sorting); candidates and
                     history are drawn from the simulated universe
  score_only         the ranker's task.score(model, hist, cand) alone: one forward pass for 100 candidates
  unbatched          baseline: the same ranker, each candidate scored in its own forward pass (what a
                     per-item scoring API would cost), end to end
  baseline_ranker    with --baseline-ranker RUN (e.g. a DeepFM run on the same simulation): that ranker
                     through the same service path, end to end

    .venv/bin/python benchmarks/bench_rank_products.py --service runs/recsys/service \
        --baseline-ranker runs/recsys/deepfm_sim

Prints one JSON line and writes benchmarks/results/recsys/rank_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from recsys_core.service import RecsysService  # noqa: E402
from sandbox.world import ShoppingWorld  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "recsys" / "rank_latency.json"


def _stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"calls": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(float(np.percentile(ordered, 99)), 3), "mean_ms": round(statistics.fmean(ordered), 3),
            "max_ms": round(ordered[-1], 3)}


def _time_calls(fn, draws: list[tuple[list[str], list[str]]], warmup: int) -> dict[str, float]:
    for cands, hist in draws[:warmup]:
        fn(cands, hist)
    samples = []
    for cands, hist in draws[warmup:]:
        started = time.perf_counter()
        fn(cands, hist)
        samples.append((time.perf_counter() - started) * 1000)
    return _stats(samples)


def _parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service", required=True, help="A service folder (shoplab recsys build-service).")
    ap.add_argument("--data-dir", help="The sandbox (default: the one the simulation was made from).")
    ap.add_argument("--calls", type=int, default=300, help="Timed calls per batched mode.")
    ap.add_argument("--unbatched-calls", type=int, default=40, help="Timed calls of the unbatched baseline.")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--baseline-ranker", help="Another ctr run on the same simulation (e.g. DeepFM).")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one core, stable).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    service_dir = Path(args.service)
    spec = json.loads((service_dir / "service.json").read_text())
    sim_dir = (service_dir / spec["sim"]).resolve() if not Path(spec["sim"]).is_absolute() else Path(spec["sim"])
    data_dir = args.data_dir or json.loads((sim_dir / "manifest.json").read_text())["sandbox"]
    world = ShoppingWorld.open(data_dir)
    service = RecsysService.load(service_dir, world)
    ids = [it["product_id"] for it in service.items]
    if len(ids) < args.candidates + args.history:
        raise SystemExit(f"the universe has {len(ids)} items; fewer than --candidates + --history")
    rng = np.random.default_rng(args.seed)

    def draws(n: int) -> list[tuple[list[str], list[str]]]:
        out = []
        for _ in range(n + args.warmup):
            pick = rng.choice(len(ids), args.candidates + args.history, replace=False)
            out.append(([ids[i] for i in pick[:args.candidates]], [ids[i] for i in pick[args.candidates:]]))
        return out

    task, model = service.ranker()

    def unbatched(cands: list[str], hist: list[str]) -> None:
        both = service.fields_of(cands + hist)
        cand_fields, hist_fields = both[:len(cands)], both[len(cands):]
        scores = [float(task.score(model, hist_fields, cand_fields[i:i + 1])[0]) for i in range(len(cands))]
        sorted(zip(scores, cands, strict=True), reverse=True)

    # score_only is timed on pre-featurized inputs: the model's share of a service call.
    featurized = []
    for cands, hist in draws(args.calls):
        featurized.append((service.fields_of(cands), service.fields_of(hist)))
    results: dict[str, Any] = {
        "service": _time_calls(service.rank_products, draws(args.calls), args.warmup),
        "score_only": _time_calls(lambda c, h: task.score(model, h, c), featurized, args.warmup),
        "unbatched": _time_calls(unbatched, draws(args.unbatched_calls), args.warmup),
    }
    models = {"service": {"model": spec.get("models", {}).get("ranker"), "run": str(service.ranker_dir),
                          "parameters": _parameters(model)}}
    if args.baseline_ranker:
        other = RecsysService(service.service_dir, {**service.spec, "ranker": str(Path(args.baseline_ranker).resolve())},
                              world)
        other_task, other_model = other.ranker()
        results["baseline_ranker"] = _time_calls(other.rank_products, draws(args.calls), args.warmup)
        models["baseline_ranker"] = {"model": other_task.cfg.model, "run": str(other.ranker_dir),
                                     "parameters": _parameters(other_model)}
    report = {
        "benchmark": "rank_products latency", "candidates": args.candidates, "history": args.history,
        "torch_threads": args.threads, "items_in_universe": len(ids), "models": models, "results": results,
        "speedup_batched_vs_unbatched_p50": round(results["unbatched"]["p50_ms"] / results["service"]["p50_ms"], 1),
        "baseline": ("unbatched = the service's ranker, one forward pass per candidate"
                     + ("; baseline_ranker = --baseline-ranker through the same service path"
                        if args.baseline_ranker else "")),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
                    or platform.machine(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    world.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
