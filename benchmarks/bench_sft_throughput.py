"""SFT throughput and peak memory of SmolLM2-135M-Instruct + LoRA (r=16, all linear) on distilled episodes.

Three settings on the same episodes, each in its own process (peak RSS is per process):
  fp32_b4   fp32, 4 episodes per batch padded to the longest: the baseline
  fp32_b1   fp32, one episode per batch (no padding), grad_accum 4
  bf16_b1   bf16 autocast (AVX512-BF16 here), one episode per batch, grad_accum 4: the distill default

    .venv/bin/python benchmarks/bench_sft_throughput.py [--data runs/distill/data/sft] [--examples 8]

Prints one JSON line, writes benchmarks/results/sft_throughput.json. Tokens are the episodes' template
tokens (the model's input), counted once per epoch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"fp32_b4": {"batch_size": 4, "grad_accum": 1, "bf16": False},
            "fp32_b1": {"batch_size": 1, "grad_accum": 4, "bf16": False},
            "bf16_b1": {"batch_size": 1, "grad_accum": 4, "bf16": True}}


def run_one(name: str, data: str, examples: int) -> dict:
    import torch
    from datasets import load_from_disk

    from agents.llm.models import resolve_model
    from training.stage_config import LoraSettings, SFTStageConfig
    from training.stages import run_sft_stage

    torch.set_num_threads(2)
    ds = load_from_disk(data).select(range(examples))
    tokens = int(sum(ds["n_tokens"]))
    cfg = SFTStageConfig(epochs=1, learning_rate=1e-4, max_length=1536, tool_chat_template=True, save_steps=10_000,
                         logging_steps=1, **SETTINGS[name])
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = run_sft_stage(resolve_model("smollm2-135m-instruct"), ds.select_columns(["messages"]), tmp, cfg,
                            LoraSettings(), merge=False)
        wall = time.perf_counter() - started
        train_s = json.loads((Path(out) / "stage.json").read_text())["metrics"]["seconds"]
    return {"setting": name, "examples": examples, "tokens": tokens, "train_seconds": train_s,
            "tokens_per_s": round(tokens / train_s, 1), "wall_seconds": round(wall, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/distill/data/sft")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--one", choices=sorted(SETTINGS))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.examples)))
        return
    rows = []
    for name in SETTINGS:
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--data", args.data, "--examples",
                               str(args.examples)], cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]["tokens_per_s"]
    result = {"benchmark": "sft_throughput", "model": "SmolLM2-135M-Instruct", "lora": "r16 all-linear",
              "rows": rows, "speedup_vs_fp32_b4": {r["setting"]: round(r["tokens_per_s"] / base, 2) for r in rows}}
    out = ROOT / "benchmarks" / "results" / "sft_throughput.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
