"""`shoplab train sft|dpo|grpo|distill`: one training stage from a YAML, or the whole distillation chain."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shoplab_core.config import cli_config, config_option, set_option
from shoplab_core.errors import fail
from training.distill.pipeline import STEPS, StudentAgentSettings
from training.stage_config import AlignStageConfig, GRPOStageConfig, LoraSettings, SFTStageConfig

app = typer.Typer(help="Fine-tune with TRL + PEFT: sft | dpo | grpo (one stage), distill (teacher → student).",
                  no_args_is_help=True)
console = Console(width=max(140, shutil.get_terminal_size().columns))

ConfigOpt = config_option(..., help="YAML (see configs/train/ and configs/distill_smollm2.yaml).")
SetOpt = set_option("Override a key: --set sft.learning_rate=1e-4 (repeatable).")
ResumeOpt = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder.")


@dataclass
class StageJobConfig:
    model: str = "smollm2-135m-instruct"  # alias, HF folder, or a stage folder (its merged model is used)
    dataset: str = ""                      # a `save_to_disk` folder or a .jsonl / .json / .parquet file
    out_dir: str = "runs/train/stage"
    seed: int = 0
    merge: bool = True                     # also write the adapter merged into the weights (next stages, vLLM)
    lora: LoraSettings = field(default_factory=LoraSettings)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: AlignStageConfig = field(default_factory=AlignStageConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    grpo_reward: str = "tool_call"         # tool_call: per-step prompts with `reference`; episode: the sandbox
    data_dir: str | None = None            # episode GRPO: a built sandbox
    task_files: list[str] = field(default_factory=list)  # episode GRPO: training tasks (never evaluation tasks)
    student_agent: StudentAgentSettings = field(default_factory=StudentAgentSettings)


def load_job(path: Path, overrides: list[str] | None = None) -> StageJobConfig:
    """defaults < the YAML < --set."""
    return cli_config(StageJobConfig, path, overrides=overrides)


def load_dataset_from(path: str):
    """A `save_to_disk` folder, or a json/jsonl/parquet file, as an HF `datasets.Dataset`."""
    from datasets import load_dataset, load_from_disk

    p = Path(path)
    if p.is_dir():
        return load_from_disk(str(p))
    kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    if p.suffix not in kinds or not p.is_file():
        raise FileNotFoundError(f"dataset {path!r}: expected a save_to_disk folder or a .jsonl/.json/.parquet file")
    return load_dataset(kinds[p.suffix], data_files=str(p), split="train")


def _model_path(name: str) -> str:
    from agents.llm.models import resolve_model
    from training.stages import stage_policy_model

    if (Path(name) / "stage.json").exists():
        return stage_policy_model(name)
    return resolve_model(name)


def _report(out: Path) -> None:
    info = json.loads((out / "stage.json").read_text())
    console.print_json(json.dumps(info["metrics"]))
    console.print(f"stage folder: {out} (adapter: {info.get('adapter')}, merged: {info.get('merged')})")


def _fail(exc: Exception) -> None:
    fail(exc)


def _run_dataset_stage(stage: str, config: Path, overrides: list[str] | None, resume: bool) -> None:
    """sft / dpo: the job's dataset through `run_<stage>_stage` with the job's `<stage>` settings."""
    import training.stages as stages

    job = load_job(config, overrides)
    try:
        dataset = load_dataset_from(job.dataset)
        out = getattr(stages, f"run_{stage}_stage")(_model_path(job.model), dataset, job.out_dir, getattr(job, stage),
                                                    job.lora, seed=job.seed, resume=resume, merge=job.merge)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    _report(out)


@app.command()
def sft(config: Path = ConfigOpt, overrides: list[str] | None = SetOpt, resume: bool = ResumeOpt) -> None:
    """Supervised fine-tuning (TRL SFTTrainer, LoRA unless sft.full_finetune) on chat data."""
    _run_dataset_stage("sft", config, overrides, resume)


@app.command()
def dpo(config: Path = ConfigOpt, overrides: list[str] | None = SetOpt, resume: bool = ResumeOpt) -> None:
    """DPO (TRL DPOTrainer, LoRA; the reference is the starting model) on prompt/chosen/rejected data."""
    _run_dataset_stage("dpo", config, overrides, resume)


@app.command()
def grpo(config: Path = ConfigOpt, overrides: list[str] | None = SetOpt, resume: bool = ResumeOpt) -> None:
    """GRPO (TRL GRPOTrainer, LoRA): per-step tool-call rewards, or whole sandbox episodes."""
    from training.stages import run_grpo_stage

    job = load_job(config, overrides)
    try:
        if job.grpo_reward == "tool_call":
            from training.tool_reward import format_reward, tool_call_reward

            dataset = load_dataset_from(job.dataset)
            missing = {"prompt", "reference"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"step GRPO needs columns prompt and reference; {job.dataset} lacks {sorted(missing)}")
            out = run_grpo_stage(_model_path(job.model), dataset.select_columns(["prompt", "reference"]), job.out_dir,
                                 job.grpo, reward_funcs=[format_reward, tool_call_reward], lora=job.lora,
                                 seed=job.seed, resume=resume, merge=job.merge)
        elif job.grpo_reward == "episode":
            out = _episode_grpo(job, resume)
        else:
            raise ValueError(f"grpo_reward must be tool_call or episode, not {job.grpo_reward!r}")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(exc)
    _report(out)


def _episode_grpo(job: StageJobConfig, resume: bool) -> Path:
    from sandbox import ShoppingWorld, default_title_similarity
    from sandbox.tasks import load_tasks
    from training.distill.pipeline import episode_prompt_dataset
    from training.episode_env import environment_factory
    from training.stages import run_grpo_stage

    if not job.data_dir or not job.task_files:
        raise ValueError("episode GRPO needs data_dir (a built sandbox) and task_files (training tasks)")
    world = ShoppingWorld.open(job.data_dir)
    tasks = load_tasks(job.task_files)[:job.grpo.tasks]
    sa = job.student_agent
    factory = environment_factory(world, tasks, default_title_similarity(), max_steps=sa.max_steps,
                                  max_observation_chars=sa.max_observation_chars)
    return run_grpo_stage(_model_path(job.model), episode_prompt_dataset(tasks, sa), job.out_dir, job.grpo,
                          environment_factory=factory, lora=job.lora, seed=job.seed, resume=resume, merge=job.merge)


def _done(pipe, step: str) -> bool:
    """Finished training and data steps are skipped; `eval` always runs (it resumes finished episodes)."""
    if step == "eval":
        return False
    marker = {"teacher": ("teacher", "summary.json"), "data": ("data", "report.json")}.get(step, (step, "stage.json"))
    return pipe.cfg.path(*marker).exists()


@app.command()
def distill(config: Path = ConfigOpt, overrides: list[str] | None = SetOpt,
            steps: str | None = typer.Option(None, "--steps", help=f"Comma-separated subset of {','.join(STEPS)}."),
            resume: bool = ResumeOpt,
            force: bool = typer.Option(False, "--force", help="Rerun steps that already finished.")) -> None:
    """Teacher trajectories → SFT → step GRPO → episode GRPO → benchmark on the dev tasks."""
    from training.distill.pipeline import DistillConfig, DistillPipeline

    cfg = cli_config(DistillConfig, config, overrides=overrides)
    wanted = [s.strip() for s in steps.split(",")] if steps else list(STEPS)
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        raise typer.BadParameter(f"unknown steps {unknown}; choose from {', '.join(STEPS)}", param_hint="--steps")
    pipe = DistillPipeline(cfg)
    for step in STEPS:
        if step not in wanted:
            continue
        if step in ("grpo_step", "grpo_episode") and not getattr(cfg, step).enabled:
            continue
        if _done(pipe, step) and not force and not (resume and step not in ("teacher", "data", "eval")):
            console.print(f"[dim]{step}: done already ({cfg.path(step)}); --force reruns it[/dim]")
            continue
        console.rule(step)
        try:
            method = getattr(pipe, step)
            info = method(resume=resume) if step in ("sft", "grpo_step", "grpo_episode") else method()
        except (FileNotFoundError, ValueError, KeyError) as exc:
            _fail(exc)
        if step == "eval":
            print_eval_table(info)
        else:
            console.print_json(json.dumps(info, default=str)[:4000])


def print_eval_table(table: dict[str, Any]) -> None:
    t = Table(title="ASR on the dev tasks")
    cols = ["agent", "n", "overall", "product", "shop", "voucher", "web", "constraint", "steps"]
    for c in cols:
        t.add_column(c, justify="left" if c == "agent" else "right")
    for agent, row in table.items():
        t.add_row(agent, *[("" if row.get(c) is None else f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]))
                           for c in cols[1:]])
    console.print(t)
