"""Episodes per hour of the react agent on SmolLM2-135M-Instruct, per LLM backend, in one session.

Each configuration runs the same tasks (`--limit` per intent) with the same parallelism through
`shoplab bench run` in its own process (vLLM starts worker processes; separate processes also
keep memory readings honest):

  transformers_plain    HF generate, batched across episodes (the baseline)
  transformers          + KV reuse: the system prompt and each episode's earlier turns are not re-read (default)
  vllm                  vLLM CPU build: continuous batching, prefix caching across turns

Wall time includes model load (and vLLM engine start) so that it is what a user waits for;
`episodes_per_hour` excludes it (the runner times only the episodes).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_agent_throughput.py --data-dir runs/sandbox

Prints one JSON line; writes benchmarks/results/agent_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "transformers_plain": ("configs/agents/react_smollm2_transformers.yaml", {"prefix_cache": False}),
    "transformers": ("configs/agents/react_smollm2_transformers.yaml", {}),
    "vllm": ("configs/agents/react_smollm2_vllm_cpu.yaml", {}),
}


def run_one(name: str, data_dir: Path, work: Path, limit: int, parallel: int) -> dict:
    base, engine = CONFIGS[name]
    cfg = yaml.safe_load((ROOT / base).read_text())
    cfg["llm"].setdefault("engine_kwargs", {}).update(engine)
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = work / name
    cmd = [sys.executable, "-m", "shoplab_cli", "bench", "run", "--data-dir", str(data_dir), "--agent", "react",
           "--llm-config", str(cfg_path), "--limit", str(limit), "--parallel", str(parallel), "--out", str(out)]
    started = time.perf_counter()
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    proc = subprocess.run([*timer, *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    rss_kb = next((int(line.split(":")[1]) for line in proc.stderr.splitlines()
                   if "Maximum resident set size" in line), 0)
    s = json.loads((out / "summary.json").read_text())
    o = s["overall"]
    return {"config": name, "episodes": s["run"]["new_episodes"], "episode_seconds_total": s["run"]["wall_seconds"],
            "wall_seconds_with_load": round(wall, 1), "episodes_per_hour": o["episodes_per_hour"],
            "mean_llm_turns": o.get("mean_llm_turns"), "mean_prompt_tokens": o.get("mean_prompt_tokens"),
            "mean_completion_tokens": o.get("mean_completion_tokens"),
            "cached_prompt_share": o.get("cached_prompt_share"), "asr": o["asr"],
            "max_rss_mb_main_process": round(rss_kb / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=ROOT / "runs" / "sandbox")
    ap.add_argument("--limit", type=int, default=2, help="tasks per intent")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    work = ROOT / "benchmarks" / "work" / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    rows = [run_one(name, args.data_dir, work, args.limit, args.parallel) for name in args.configs]
    base = next((r for r in rows if r["config"] == "transformers_plain"), rows[0])
    for r in rows:
        r["speedup_vs_" + base["config"]] = round(r["episodes_per_hour"] / base["episodes_per_hour"], 2)
    manifest = json.loads((args.data_dir / "manifest.json").read_text())
    result = {"benchmark": "agent_throughput", "model": "SmolLM2-135M-Instruct (fp32)", "agent": "react",
              "parallel": args.parallel, "tasks_per_intent": args.limit, "n_products": manifest.get("n_products"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    out = ROOT / "benchmarks" / "results" / "agent_throughput.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
