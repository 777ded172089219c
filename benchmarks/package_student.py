"""Package a distilled student's LoRA adapter as the model the project ships (data/models/<name>/).

Copies the SFT stage's adapter (its `adapter_config.json` names the bundled base by its alias, so the
folder loads on any machine), stores the weights in bfloat16 (half the bytes; PEFT and vLLM cast them to
the model's dtype on load), and writes the model card from the run's own records: the distillation
config, the data report, the SFT log and the evaluation summaries given with --eval.

    .venv/bin/python benchmarks/package_student.py --run-dir runs/distill_default \
        --eval student=runs/eval/student24_shoplab --eval heuristic=runs/eval/heuristic24_shoplab

Prints one JSON line (files, bytes, metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "data" / "models" / "smollm2-135m-shoplab-student"
INTENTS = ("overall", "product", "shop", "voucher", "web")


def _adapter_dir(run_dir: Path) -> Path:
    stage = run_dir / "sft"
    info = json.loads((stage / "stage.json").read_text())
    return stage / info["adapter"]


def _sft_log(run_dir: Path) -> list[dict]:
    """The trainer's logged losses (trainer_state.json of the last checkpoint)."""
    states = sorted((run_dir / "sft").glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def paired_differences(evals: dict[str, Path]) -> list[str]:
    """The first eval's ASR minus each other eval's on the tasks both ran, with a paired bootstrap over tasks
    (95% interval, `shoplab_core.stats.paired_bootstrap`, the one the result tables use): one line each."""
    from agents.trajectories import iter_episodes
    from shoplab_core.stats import paired_bootstrap

    def solved(run: Path) -> dict[str, float]:
        by_task: dict[str, list[float]] = {}
        for r in iter_episodes([run]):
            by_task.setdefault(r["task_id"], []).append(float(bool(r["success"])))
        return {t: sum(v) / len(v) for t, v in by_task.items()}

    names = list(evals)
    first = solved(evals[names[0]]) if names else {}
    lines = []
    for other in names[1:]:
        theirs = solved(evals[other])
        common = sorted(set(first) & set(theirs))
        if not common:
            continue
        boot = paired_bootstrap([first[t] for t in common], [theirs[t] for t in common])
        lines.append(f"- {names[0]} − {other} on the {len(common)} tasks both ran: {boot['diff']:+.3f} "
                     f"[{boot['low']:+.3f}, {boot['high']:+.3f}] (paired bootstrap over tasks, 95%)")
    return lines


def training_passes(run_dir: Path) -> list[Path]:
    """The run and the earlier runs it warm-started from (`sft.init_adapter` = <run>/sft/adapter), first first."""
    chain = [run_dir]
    while True:
        init = (json.loads((chain[0] / "config.json").read_text())["sft"].get("init_adapter") or "")
        if not init:
            return chain
        previous = Path(init).parent.parent
        if previous in chain or not (previous / "config.json").exists():
            raise ValueError(f"{chain[0]} continues {init}, which is not a distill run's sft/adapter folder")
        chain.insert(0, previous)


def _pass_line(k: int, run_dir: Path) -> str:
    """What one SFT pass trained on and how long it took, from its own records."""
    cfg = json.loads((run_dir / "config.json").read_text())
    data = json.loads((run_dir / "data" / "report.json").read_text())
    sft = json.loads((run_dir / "sft" / "stage.json").read_text())["metrics"]
    d = cfg["data"]
    start = f"continuing pass {k - 1}'s adapter" if cfg["sft"].get("init_adapter") else "a fresh adapter on the base"
    drawn = ("the first episodes of the seeded shuffle" if not d.get("skip_examples") and not d.get("exclude_tasks_of")
             else f"skipping the first {d['skip_examples']} of the same shuffle" if d.get("skip_examples")
             else "only tasks no earlier pass trained on")
    recovery = ""
    if d.get("error_recovery"):
        recovery = f"; {int(d['error_recovery'] * 100)}% of the episodes drawn with an error-recovery turn"
    return (f"- Pass {k} (`{run_dir}`): {data['sft_examples']} product episodes ({data['sft_tokens']:,} tokens, "
            f"at most {d['max_tokens']} each), {drawn}{recovery}; {start}; {cfg['sft']['epochs']} epoch, "
            f"lr {cfg['sft']['learning_rate']}, {sft['steps']} steps in {sft['seconds']:,.0f} s; loss "
            f"{sft['first_logged_loss']:.3f} → {sft['last_logged_loss']:.3f}.")


def truncate_rank(weights: dict, rank: int) -> tuple[dict, float]:
    """The best rank-`rank` approximation (SVD) of every LoRA update B·A, as a new (B, A) pair, and the share
    of the updates' squared Frobenius norm it keeps. The product B·A is what the model adds to each weight, so
    with the scale alpha/r kept equal the truncated adapter is the closest one of that rank (Eckart–Young)."""
    import torch

    out, kept, total = {}, 0.0, 0.0
    for key in [k for k in weights if ".lora_A." in k]:
        b_key = key.replace(".lora_A.", ".lora_B.")
        a, b = weights[key].double(), weights[b_key].double()          # A: r × in, B: out × r
        q_b, r_b = torch.linalg.qr(b)                                  # B·A = Q_b (R_b R_aᵀ) Q_aᵀ
        q_a, r_a = torch.linalg.qr(a.T)
        u, sigma, vh = torch.linalg.svd(r_b @ r_a.T)
        root = sigma[:rank].sqrt()
        out[b_key] = ((q_b @ u[:, :rank]) * root).float()
        out[key] = (root[:, None] * (vh[:rank] @ q_a.T)).float()
        kept, total = kept + float((sigma[:rank] ** 2).sum()), total + float((sigma ** 2).sum())
    return out, kept / total if total else 1.0


def package(run_dir: Path, out: Path, evals: dict[str, Path], note: str = "", rank: int | None = None) -> dict:
    from safetensors.torch import load_file, save_file

    adapter = _adapter_dir(run_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "smollm2-135m-instruct"  # the bundled base, by alias: portable
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    trained_rank, kept = config["r"], 1.0
    if rank is not None and rank < trained_rank:
        # Half the rank, half the bytes (the repository keeps files under 5 MiB); alpha/r stays the same.
        weights, kept = truncate_rank(weights, rank)
        config["lora_alpha"] = config["lora_alpha"] * rank / trained_rank
        config["r"] = rank
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.bfloat16().contiguous() for k, v in weights.items()}, str(out / "adapter_model.safetensors"))
    distill = json.loads((run_dir / "config.json").read_text())
    passes = training_passes(run_dir)
    # What the teacher step ran (config.json holds the settings of the last step run, not necessarily its);
    # a warm-started pass distils the first pass's teacher episodes.
    teacher = json.loads((passes[0] / "teacher" / "summary.json").read_text())
    data = json.loads((run_dir / "data" / "report.json").read_text())
    log = _sft_log(run_dir)
    summaries = {name: json.loads((path / "summary.json").read_text()) for name, path in evals.items()}
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    card = _card(config, distill, teacher, data, log, summaries, sha, sum(v.numel() for v in weights.values()),
                 note, trained_rank, kept, passes, paired_differences(evals))
    (out / "README.md").write_text(card)
    metrics = {name: {i: s[i]["asr"] for i in INTENTS if i in s} for name, s in summaries.items()}
    (out / "metrics.json").write_text(json.dumps({"evals": {n: {"run": str(p), **metrics[n]} for n, p in evals.items()},
                                                  "data": data, "sft_log": log}, indent=2) + "\n")
    return {"out": str(out), "trained_rank": trained_rank, "rank": config["r"], "update_norm_kept": round(kept, 4),
            "files": sorted(p.name for p in out.iterdir()),
            "bytes": sum(p.stat().st_size for p in out.iterdir()), "metrics": metrics}


def _card(config: dict, distill: dict, teacher: dict, data: dict, log: list[dict], summaries: dict[str, dict], sha: str,
          n_params: int, note: str = "", trained_rank: int | None = None, kept: float = 1.0,
          passes: list[Path] | None = None, differences: list[str] | None = None) -> str:
    losses = [e for e in log if "loss" in e]
    sft = distill["sft"]
    rows = []
    for name, s in summaries.items():
        run = s.get("run") or {}
        cells = [f"{s[i]['asr']:.3f} ({s[i]['n']})" if i in s else "-" for i in INTENTS]
        rows.append(f"| {name} | {run.get('agent', '?')} | " + " | ".join(cells) + " |")
    truncation = "" if trained_rank in (None, config.get("r")) else (
        f"\n- Packaging: trained at rank {trained_rank}; each update B·A is stored as its best rank-{config.get('r')} "
        f"approximation (SVD), keeping {100 * kept:.1f}% of the updates' squared norm, so the file stays under "
        "5 MiB. The metrics below are of this packaged adapter.")
    loss_line = (f"{losses[0]['loss']:.3f} (step {losses[0]['step']}) → {losses[-1]['loss']:.3f} (step {losses[-1]['step']})"
                 if losses else "not logged")
    return f"""# smollm2-135m-shoplab-student

A LoRA adapter (r={config.get('r')}, alpha={config.get('lora_alpha')}, all linear layers; {n_params:,} parameters,
stored in bfloat16) on SmolLM2-135M-Instruct (the bundled base, `smollm2-135m-instruct`), trained by
trajectory distillation in shoplab: the default model of `make run`'s LLM agent and of `make demo`'s chat.
Load it by name: `--model shoplab-student` (transformers or vLLM; `configs/agents/react_student_vllm_cpu.yaml`).

## How it was made (code at commit {sha}, on the 2 CPU cores of the development machine)

```bash
bash benchmarks/train_student.sh      # every pass, the evaluations below, this packaging
```

- Teacher: the scripted, instruction-grounded `teacher` agent on {teacher['product']['n']} generated product
  tasks and {teacher.get('shop', {}).get('n', 0)} shop tasks (sandbox.task_generator, seed {distill['teacher']['task_seed']}) in a
  200,000-product sandbox (seed 0); {data['successful']} of {data['episodes']} episodes succeeded, and rejection
  sampling kept {data['tasks_kept']} tasks (the shortest successful episode each).
- SFT in {len(passes or [None])} pass(es) of TRL `SFTTrainer` + PEFT LoRA (batch {sft['batch_size']} × {sft['grad_accum']} accumulation,
  bf16 autocast, assistant-only loss), in the student's prompt (`system_hermes`: every argument's format
  stated, no example values) with Hermes tool calls on the `tool` chat template. Each pass trains on
  episodes no earlier pass saw, so its first logged loss is a held-out loss of the pass before:
{chr(10).join("  " + _pass_line(k, p) for k, p in enumerate(passes or [], 1))}
- Last pass's training loss {loss_line}.{truncation}

## Metrics (ASR, tasks in brackets; ShoppingBench's rules, `shoplab` profile as in training)

| run | agent | overall | product | shop | voucher | web |
|---|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

{chr(10).join(differences or [])}

## Limits

It is trained on product tasks only ({len(passes or [None])} CPU passes of 240 episodes each); it is not a general shopping
agent. Larger runs (all intents, several epochs, GRPO) are the learning-loops work (`make distill`,
docs/training.md).
{note}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--eval", action="append", default=[], help="NAME=RUN_DIR of a `shoplab bench run` (repeatable).")
    ap.add_argument("--note", default="", help="What the table means, for the card's Limits section.")
    ap.add_argument("--rank", type=int, default=None, help="Store the adapter at this lower rank (SVD of each update).")
    args = ap.parse_args()
    evals = dict((name, Path(path)) for name, path in (e.split("=", 1) for e in args.eval))
    print(json.dumps(package(args.run_dir, args.out, evals, args.note, args.rank)))


if __name__ == "__main__":
    main()
