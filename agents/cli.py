"""`shoplab bench ...`: run agents on task sets and compare runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sandbox.cli import MULTI_VALUE, extra_task_files

app = typer.Typer(help="Run agents on benchmark tasks and compare runs.", no_args_is_help=True)
console = Console()


def _select_tasks(world, task_files: list[Path] | None, intents: list[str] | None, limit: int | None):
    from sandbox.tasks import load_tasks

    if task_files:
        wanted = load_tasks(task_files)
        missing = [t.task_id for t in wanted if t.task_id not in world.tasks]
        if missing:
            raise typer.BadParameter(f"{len(missing)} tasks are not in this sandbox (e.g. {missing[0]}); "
                                     "rebuild it with these task files in --tasks", param_hint="--tasks")
        tasks = [world.tasks[t.task_id] for t in wanted]
    else:
        tasks = list(world.tasks.values())
    if intents:
        tasks = [t for t in tasks if t.intent.value in intents]
    if limit:
        # The first `limit` tasks of each intent, so a small run still covers every intent.
        per: dict[str, int] = {}
        kept = []
        for t in tasks:
            if per.get(t.intent.value, 0) < limit:
                per[t.intent.value] = per.get(t.intent.value, 0) + 1
                kept.append(t)
        tasks = kept
    return tasks


def print_summary(summary: dict, title: str) -> None:
    table = Table(title=title)
    cols = ["intent", "n", "ASR", "constraint", "gt", "steps", "s/episode"]
    k_cols = sorted(k for k in summary.get("overall", {}) if k.startswith("pass^"))
    for c in cols + k_cols:
        table.add_column(c, justify="right" if c != "intent" else "left")
    for intent, block in summary.items():
        if intent == "run" or not isinstance(block, dict) or "asr" not in block:
            continue
        table.add_row(intent, str(block["n"]), f"{block['asr']:.3f}", f"{block['constraint_score']:.3f}",
                      f"{block.get('gt_rate', 0):.3f}", f"{block.get('mean_steps', 0):.1f}",
                      f"{block.get('mean_seconds', 0):.2f}", *[f"{block.get(k, float('nan')):.3f}" for k in k_cols])
    console.print(table)


@app.command(context_settings=MULTI_VALUE)
def run(
    ctx: typer.Context,
    data_dir: Path = typer.Option(..., "--data-dir"),
    agent: str = typer.Option(..., "--agent", help="oracle | heuristic | any registered agent"),
    out: Path = typer.Option(..., "--out", help="Run folder: results.jsonl, summary.json (resumable)."),
    tasks: list[Path] | None = typer.Option(None, "--tasks", help="Task files (default: all tasks of the sandbox)."),
    intent: list[str] | None = typer.Option(None, "--intent", help="Only these intents."),
    trials: int = typer.Option(1, "--trials", min=1),
    parallel: int = typer.Option(1, "--parallel", min=1),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N tasks per intent."),
    max_steps: int = typer.Option(30, "--max-steps", min=1),
) -> None:
    """Run an agent on tasks; prints a scorecard per intent and writes RUN_DIR/{results.jsonl,summary.json}."""
    from agents.registry import make_agent
    from agents.runner import RunConfig, run_benchmark
    from sandbox import ShoppingWorld

    tasks = extra_task_files(ctx, tasks) or None
    world = ShoppingWorld.open(data_dir)
    selected = _select_tasks(world, tasks, intent, limit)
    try:
        make_agent(agent)
    except KeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc
    config = RunConfig(agent=agent, trials=trials, parallel=parallel, max_steps=max_steps)
    summary = run_benchmark(world, selected, lambda: make_agent(agent), out, config)
    print_summary(summary, f"{agent} on {len(selected)} tasks × {trials} trial(s) — {out}")


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="Run folders to compare.")) -> None:
    """Compare runs side by side (ASR per intent)."""
    summaries = {}
    for d in run_dirs:
        path = d / "summary.json"
        if not path.exists():
            console.print(f"[red]{d} has no summary.json[/red]")
            raise typer.Exit(1)
        summaries[d.name] = json.loads(path.read_text())
    intents = ["overall"] + sorted({k for s in summaries.values() for k in s if k not in ("overall", "run")})
    table = Table(title="ASR per intent (constraint score in brackets)")
    table.add_column("run")
    for i in intents:
        table.add_column(i, justify="right")
    for name, s in summaries.items():
        table.add_row(name, *[f"{s[i]['asr']:.3f} ({s[i]['constraint_score']:.2f})" if i in s else "-"
                              for i in intents])
    console.print(table)
