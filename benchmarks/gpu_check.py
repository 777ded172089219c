"""Does everything that places tensors run on the GPU? One short pass over each device path.

    python benchmarks/gpu_check.py                  # on CUDA (fails clearly when there is none)
    python benchmarks/gpu_check.py --device cpu     # the same checks on the CPU (to try the script)
    python benchmarks/gpu_check.py --only recsys    # a subset: recsys, sft, react (or one recsys:<model>)

Checks (one JSON line each, also written to benchmarks/results/gpu_check.jsonl):
- `recsys:<model>`: trains every recsys smoke config (recsys_core/models/*/smoke.yaml, plus a small GPSD
  pretraining, which has none) with `train.device` set, evaluation included (where 6 of 10 models
  crashed on a GPU before evaluation followed the model's device);
- `sft`: one TRL SFT step (2 examples, max_steps 1) on the bundled SmolLM2-135M through the one loader
  (`shoplab_core.models.load_causal_lm`), device and bf16 from `device: auto`-style settings;
- `react`: one ReAct episode with the transformers backend (configs/agents/react_smollm2_transformers.yaml)
  on a small sandbox (2,000 products), the title-similarity scorer on the same device.

Line format: {"check", "ok", "device", "seconds", "error", "details"}. Exit status 1 when a check failed,
2 when the device is not there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODELS_DIR = ROOT / "recsys_core" / "models"
TASK_FILES = sorted((ROOT / "data" / "shoppingbench").glob("synthesize_*_dev.jsonl"))
LLM_CONFIG = ROOT / "configs" / "agents" / "react_smollm2_transformers.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.jsonl"
GROUPS = ("recsys", "sft", "react")
GPSD_PRETRAIN = {"model": "gpsd_generative", "task": "gpsd_pretrain",
                 "data": {"kind": "synthetic", "users": 200, "items": 60, "max_len": 12},
                 "model_params": {"hidden": 32, "layers": 1, "heads": 4, "n_negatives": 32},
                 "train": {"epochs": 2, "batch_size": 64, "lr": 0.005, "progress": False}}


# -- the checks -----------------------------------------------------------------------------------
def recsys_checks(device: str, work: Path) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    from recsys_core import ExperimentConfig, Trainer

    def run(name: str, cfg) -> dict[str, Any]:
        cfg.train.device = device
        cfg.train.progress = False
        trainer = Trainer(cfg, work / "recsys" / name)
        result = trainer.fit()
        numbers = {k: round(v, 4) for k, v in result["test"].items() if isinstance(v, float)}
        bad = [k for k, v in numbers.items() if v != v]  # NaN
        if bad:
            raise RuntimeError(f"test metrics {bad} are NaN")
        return {"steps": result["steps"], "test": numbers, "train_seconds": result["train_seconds"]}

    checks = []
    for path in sorted(MODELS_DIR.glob("*/smoke.yaml")):
        checks.append((f"recsys:{path.parent.name}",
                       lambda path=path: run(path.parent.name, ExperimentConfig.from_yaml(path))))
    checks.append(("recsys:gpsd_generative",
                   lambda: run("gpsd_generative", ExperimentConfig.from_dict(json.loads(json.dumps(GPSD_PRETRAIN))))))
    return checks


def sft_check(device: str, work: Path) -> dict[str, Any]:
    from datasets import Dataset

    from shoplab_core.models import resolve_model_ref
    from training.stage_config import SFTStageConfig
    from training.stages import _placement, run_sft_stage

    model_path = resolve_model_ref("smollm2-135m-instruct")
    rows = [{"prompt": [{"role": "user", "content": f"rewrite: cheap phone case for my mom, size {i}"}],
             "completion": [{"role": "assistant", "content": f"phone case size {i}"}]} for i in range(2)]
    cfg = SFTStageConfig(max_steps=1, batch_size=2, max_length=64, device=device, logging_steps=1, save_steps=10)
    use_cpu, bf16 = _placement(cfg.device, cfg.bf16)
    out = run_sft_stage(model_path, Dataset.from_list(rows), work / "sft", cfg, merge=False)
    info = json.loads((out / "stage.json").read_text())
    loss = info["metrics"]["train_loss"]
    if not (loss == loss) or info["metrics"]["steps"] != 1:
        raise RuntimeError(f"SFT did not take one finite step: {info['metrics']}")
    return {"train_loss": loss, "steps": info["metrics"]["steps"], "use_cpu": use_cpu, "bf16": bf16,
            "adapter": (out / "adapter" / "adapter_config.json").exists()}


def react_check(device: str, dtype: str, work: Path, sandbox_dir: Path | None, n_products: int) -> dict[str, Any]:
    from agents.llm import LLMConfig, SamplingConfig, make_llm
    from agents.react import ReactAgent, ReactConfig
    from agents.runner import RunConfig, run_benchmark
    from sandbox.scorer import default_title_similarity
    from sandbox.world import ShoppingWorld
    from shoplab_core.devices import module_device

    if sandbox_dir is None:
        from sandbox.catalogue import build_sandbox

        sandbox_dir = work / "sandbox"
        build_sandbox(sandbox_dir, TASK_FILES, n_products=n_products, seed=0, progress=False)
    world = ShoppingWorld.open(sandbox_dir)
    try:
        cfg = LLMConfig.from_yaml(LLM_CONFIG)
        cfg = dataclasses.replace(cfg, device=device, dtype=dtype, max_batch_size=1,
                                  sampling=SamplingConfig(temperature=0.0, max_new_tokens=64))
        llm = make_llm(cfg)
        backend = getattr(llm, "llm", llm)
        model_device = str(module_device(backend.model))
        model_dtype = str(next(backend.model.parameters()).dtype)
        similarity = default_title_similarity(device=device)
        task = next(t for t in world.tasks.values() if t.intent.value == "product")
        try:
            summary = run_benchmark(world, [task], lambda: ReactAgent(llm, ReactConfig(max_steps=3),
                                                                       tool_format=cfg.tool_format),
                                    work / "react", RunConfig(agent="react", max_steps=3), similarity=similarity,
                                    progress=False)
        finally:
            llm.close()
        row = json.loads((work / "react" / "results.jsonl").read_text().splitlines()[0])
        if row["error"]:
            raise RuntimeError(f"the episode failed: {row['error']}")
        if not row["info"].get("completion_tokens"):
            raise RuntimeError("the model generated no tokens")
        return {"model_device": model_device, "model_dtype": model_dtype,
                "similarity_device": str(getattr(similarity, "device", "?")), "steps": row["steps"],
                "completion_tokens": row["info"].get("completion_tokens"), "success": row["success"],
                "n": summary["overall"]["n"]}
    finally:
        world.close()


# -- the driver -----------------------------------------------------------------------------------
def _selected(name: str, only: list[str], skip: list[str]) -> bool:
    def hit(patterns: list[str]) -> bool:
        return any(name == p or name.split(":")[0] == p for p in patterns)

    return (not only or hit(only)) and not hit(skip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default; fails when absent), cuda:N, cpu, auto")
    parser.add_argument("--dtype", default="auto", help="the LLM backend's dtype (auto: bf16 on CUDA when supported)")
    parser.add_argument("--only", default="", help="comma-separated: recsys, sft, react or recsys:<model>")
    parser.add_argument("--skip", default="", help="comma-separated, as --only")
    parser.add_argument("--sandbox", type=Path, default=None, help="an existing sandbox data dir (else one is built)")
    parser.add_argument("--n-products", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    import torch

    from shoplab_core.devices import resolve_device

    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in lines))

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        emit({"check": "device", "ok": False, "device": args.device, "seconds": 0.0, "error": str(exc),
              "details": {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}})
        return 2
    details = {"torch": torch.__version__, "cuda": torch.version.cuda,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    emit({"check": "device", "ok": True, "device": str(device), "seconds": 0.0, "error": None, "details": details})

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        checks: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if any(_selected(f"recsys:{p.parent.name}", only, skip) for p in MODELS_DIR.glob("*/smoke.yaml")) or \
                _selected("recsys:gpsd_generative", only, skip):
            checks += [c for c in recsys_checks(args.device, work) if _selected(c[0], only, skip)]
        if _selected("sft", only, skip):
            checks.append(("sft", lambda: sft_check(args.device, work)))
        if _selected("react", only, skip):
            checks.append(("react", lambda: react_check(args.device, args.dtype, work, args.sandbox, args.n_products)))
        failed = 0
        for name, check in checks:
            started = time.perf_counter()
            try:
                result, error = check(), None
            except Exception as exc:  # one broken check must not hide the others
                result, error = {}, f"{type(exc).__name__}: {exc}"[:800]
                result["traceback"] = traceback.format_exc()[-2500:]
            failed += error is not None
            emit({"check": name, "ok": error is None, "device": str(device),
                  "seconds": round(time.perf_counter() - started, 2), "error": error, "details": result})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
