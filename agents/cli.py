"""`shoplab bench ...`: run agents on task sets and compare runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sandbox.cli import MULTI_VALUE, extra_task_files
from shoplab_core.config import ConfigError, cli_config, data_dir_option, split_sections
from shoplab_core.errors import UserError, fail

app = typer.Typer(help="Run agents on benchmark tasks and compare runs.", no_args_is_help=True)
# Wide enough for the comparison table when output goes to a file or CI log (rich assumes 80 there).
# The terminal's width; 120 columns when the output is a pipe or a log (rich would assume 80).
console = Console(width=None if sys.stdout.isatty() else 120)


def _select_tasks(world, task_files: list[Path] | None, intents: list[str] | None, limit: int | None):
    from sandbox.tasks import first_per_intent, load_tasks

    if task_files:
        wanted = load_tasks(task_files)
        # Tasks built into the sandbox, or tasks over products already in its catalogue (generated training
        # tasks): anything else has no gold to find, and would score 0 for every agent.
        missing = [t.task_id for t in wanted if t.task_id not in world.tasks and not _golds_in_catalogue(world, t)]
        if missing:
            raise typer.BadParameter(f"{len(missing)} tasks are not in this sandbox (e.g. {missing[0]}); "
                                     "rebuild it with these task files in --tasks", param_hint="--tasks")
        tasks = [world.tasks.get(t.task_id, t) for t in wanted]
    else:
        tasks = list(world.tasks.values())
    if intents:
        tasks = [t for t in tasks if t.intent.value in intents]
    if limit:
        tasks = first_per_intent(tasks, limit)
    return tasks


def _golds_in_catalogue(world, task) -> bool:
    if task.voucher is not None or task.knowledge_attribute is not None:
        return False  # their vouchers and records are registered when the sandbox is built
    ids = [s.product_id for s in task.reward]
    return len(world.products(ids)) == len(set(ids))


def print_summary(summary: dict, title: str) -> None:
    table = Table(title=title)
    blocks = {k: v for k, v in summary.items() if k != "run" and isinstance(v, dict) and "asr" in v}
    llm = any("mean_llm_turns" in b for b in blocks.values())
    cols = ["intent", "n", "ASR", "constraint", "gt", "steps", "s/episode"]
    if llm:
        cols += ["LLM turns", "tokens/episode", "format errors", "fallback"]
    k_cols = sorted(k for k in summary.get("overall", {}) if k.startswith("pass^"))
    for c in cols + k_cols:
        table.add_column(c, justify="right" if c != "intent" else "left")
    for intent, block in blocks.items():
        row = [intent, str(block["n"]), f"{block['asr']:.3f}", f"{block['constraint_score']:.3f}",
               f"{block.get('gt_rate', 0):.3f}", f"{block.get('mean_steps', 0):.1f}",
               f"{block.get('mean_seconds', 0):.2f}"]
        if llm:
            tokens = block.get("mean_prompt_tokens", 0) + block.get("mean_completion_tokens", 0)
            row += [f"{block.get('mean_llm_turns', 0):.1f}", f"{tokens:,.0f}",
                    f"{block.get('format_error_rate', 0):.2f}", f"{block.get('fallback_rate', 0):.2f}"]
        table.add_row(*row, *[f"{block.get(k, float('nan')):.3f}" for k in k_cols])
    console.print(table)


@app.command(context_settings=MULTI_VALUE)
def run(
    ctx: typer.Context,
    data_dir: Path = data_dir_option(),
    agent: str = typer.Option(..., "--agent", help="oracle | heuristic | any registered agent"),
    out: Path = typer.Option(..., "--out", help="Run folder: results.jsonl, summary.json (resumable)."),
    tasks: list[Path] | None = typer.Option(None, "--tasks", help="Task files (default: all tasks of the sandbox)."),
    intent: list[str] | None = typer.Option(None, "--intent", help="Only these intents."),
    trials: int = typer.Option(1, "--trials", min=1),
    parallel: int = typer.Option(1, "--parallel", min=1),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N tasks per intent."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Steps per episode (default: the "
                                         "agent config's max_steps, 30 without one)."),
    llm: str | None = typer.Option(None, "--llm", help="LLM backend: transformers | vllm | openai."),
    model: str | None = typer.Option(None, "--model", help="HF folder, hub name, or smollm2-135m-instruct "
                                     "(the bundled default); for openai, the served model name."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. "
                                        "http://localhost:8000/v1 (or env OPENAI_BASE_URL)."),
    llm_config: Path | None = typer.Option(None, "--llm-config", "--config", help="YAML with an `llm:` "
                                           "section (and optionally `agent:`); --set and flags override it."),
    agent_config: Path | None = typer.Option(None, "--agent-config", help="YAML with an `agent:` section "
                                             "(default: the --llm-config file's)."),
    overrides: list[str] | None = typer.Option(None, "--set", help="Override a config key (repeatable): "
                                               "--set agent.max_steps=8, --set llm.sampling.temperature=0.7."),
    tool_format: str | None = typer.Option(None, "--tool-format", help="text (ShoppingBench tags) | native."),
    lora: Path | None = typer.Option(None, "--lora", help="A PEFT LoRA adapter folder to serve."),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Local backends: prompts per "
                                          "generation batch (default: the config's max_batch_size, 8)."),
    rewriter: str | None = typer.Option(None, "--rewriter", help="Turn on the search's rewrite stage: `rule`, "
                                        "or a trained rewriter stage folder (e.g. runs/rewrite/align_pro)."),
    recsys_service: Path | None = typer.Option(None, "--recsys-service", help="Offer the recommender tools of "
                                               "this service folder (shoplab recsys build-service) to every "
                                               "episode; the heuristic agent then re-ranks its hits with "
                                               "rank_products."),
    profile: str | None = typer.Option(None, "--profile", help="shoppingbench (default: the tools answer as "
                                       "ShoppingBench's own do, so scores mean the same there) | shoplab "
                                       "(validated arguments, readable errors, all-words-first search)."),
    search_mode: str | None = typer.Option(None, "--search-mode", help="find_product's retrieval: bm25 | dense | "
                                           "hybrid (default: the sandbox manifest's, else bm25); dense and hybrid "
                                           "need the sandbox's dense index and bring the shoplab profile."),
) -> None:
    """Run an agent on tasks; prints a scorecard per intent and writes RUN_DIR/{results.jsonl,summary.json}."""
    from agents.registry import agent_names, agent_needs_llm, make_agent
    from agents.runner import RunConfig, RunFolderBusy, run_benchmark
    from sandbox import PROFILES, ShoppingWorld, load_toolkits

    tasks = extra_task_files(ctx, tasks) or None
    if agent not in agent_names():
        raise typer.BadParameter(f"unknown agent {agent!r}; available: {', '.join(agent_names())}",
                                 param_hint="--agent")
    try:
        world = ShoppingWorld.open(data_dir, search_mode=search_mode)
    except UserError:
        raise  # no sandbox there: the CLI's one-line error
    except (FileNotFoundError, ValueError) as exc:  # e.g. a search mode the sandbox has no index for
        raise typer.BadParameter(str(exc), param_hint="--search-mode") from exc
    selected = _select_tasks(world, tasks, intent, limit)
    chat = None
    llm_settings = None
    toolkits: list = []
    kwargs: dict = {}
    if agent_needs_llm(agent):
        from agents.llm import LLMError, make_llm

        cfg, agent_cfg = run_configs(llm_config, agent_config, overrides, {
            "backend": llm, "model": model, "base_url": base_url, "tool_format": tool_format, "lora_path": lora,
            "max_batch_size": batch_size, "sampling.temperature": temperature,
            "sampling.max_new_tokens": max_new_tokens}, {"max_steps": max_steps})
        kwargs = {"config": agent_cfg, "tool_format": cfg.tool_format}
        try:  # plug-in toolkits (rewrite, recsys, ...) the agent config names: built once, shared by episodes
            toolkits = load_toolkits(agent_cfg.toolkits, world)
        except (ValueError, TypeError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--agent-config") from exc
        max_steps = agent_cfg.max_steps
        llm_settings = cfg.as_dict()
        console.print(f"[bold]{agent}[/bold] with {cfg.backend}:{cfg.model} ({cfg.tool_format} tool calls)")
        try:
            chat = make_llm(cfg)
        except LLMError as exc:
            fail(exc)
        chat.expect_clients(parallel)
        kwargs["llm"] = chat
    elif llm or model or base_url or llm_config or agent_config or overrides:
        raise typer.BadParameter(f"agent {agent!r} does not use an LLM (nor its configs)", param_hint="--llm")
    if recsys_service is not None:
        if not (recsys_service / "service.json").exists():
            raise typer.BadParameter(f"{recsys_service} is not a recsys service folder (no service.json); build one "
                                     "with `shoplab recsys build-service`", param_hint="--recsys-service")
        toolkits = [*toolkits, *load_toolkits({"recsys": {"service": str(recsys_service)}}, world)]
    config = cli_config(RunConfig, flags={"agent": agent, "trials": trials, "parallel": parallel,
                                          "max_steps": max_steps, "llm": llm_settings, "rewriter": rewriter,
                                          "search_mode": world.search_mode,
                                          # the rewrite stage and the dense modes are part of shoplab's search:
                                          # they bring its profile
                                          "profile": profile or ("shoplab" if rewriter or world.search_mode != "bm25"
                                                                 else None)})
    if config.profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {config.profile!r}; choose from {', '.join(PROFILES)}",
                                 param_hint="--profile")
    if rewriter and config.profile != "shoplab":
        raise typer.BadParameter("the search's rewrite stage is part of the shoplab profile: add --profile shoplab",
                                 param_hint="--rewriter")
    if world.search_mode != "bm25" and config.profile != "shoplab":
        raise typer.BadParameter(f"search mode {world.search_mode!r} is part of the shoplab profile's search: add "
                                 "--profile shoplab", param_hint="--search-mode")
    query_rewriter = None
    if rewriter:
        from sandbox.rewrite_stage import load_query_rewriter

        try:
            query_rewriter = load_query_rewriter(rewriter)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--rewriter") from exc
    try:
        summary = run_benchmark(world, selected, lambda: make_agent(agent, **kwargs), out, config,
                                query_rewriter=query_rewriter, toolkits=toolkits)
    except RunFolderBusy as exc:
        fail(exc)
    finally:
        if chat is not None:
            chat.close()
    print_summary(summary, f"{agent} on {len(selected)} tasks × {trials} trial(s) — {out}")
    eph = summary["overall"].get("episodes_per_hour")
    if eph:
        console.print(f"{summary['run']['new_episodes']} episodes in {summary['run']['wall_seconds']:.0f} s "
                      f"({eph:,.0f} episodes/hour)")
    console.print(f"[dim]Read them: shoplab bench show {out}[/dim]")


def run_configs(llm_config: Path | None, agent_config: Path | None, overrides: list[str] | None = None,
                llm_flags: dict | None = None, agent_flags: dict | None = None):
    """The LLMConfig and ReactConfig of `bench run`: defaults < YAML < --set llm.*/agent.* < given flags.

    The agent section comes from --agent-config, else from the --llm-config file (its `agent:` section)."""
    from agents.llm import LLMConfig
    from agents.react import ReactConfig

    try:
        sets = split_sections(overrides, ("llm", "agent"))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from exc
    llm_cfg = cli_config(LLMConfig, llm_config, "llm", sets["llm"], llm_flags, param_hint="--llm-config/--set")
    agent_cfg = cli_config(ReactConfig, agent_config or llm_config, "agent", sets["agent"], agent_flags,
                           param_hint="--agent-config/--set")
    return llm_cfg, agent_cfg


@app.command()
def tools() -> None:
    """Every tool an agent config can select: by name in `tools:`, or by its group; plug-in toolkits
    also need an entry under `toolkits:` (e.g. `toolkits: {rewrite: {rewriter: rule}}`)."""
    from sandbox import BUILTIN_TOOLKITS, toolkit_classes

    table = Table(title="Tools (agent config: tools: \\[name or group, ...])")
    for column in ("group", "tool", "kind", "toolkit", "description"):
        table.add_column(column)
    kits = [(type(kit).__name__, "built in", kit.specs()) for kit in BUILTIN_TOOLKITS]
    kits += [(cls.__name__, f"toolkits: {{{name}: ...}}", cls.specs()) for name, cls in toolkit_classes().items()]
    for class_name, how, specs in kits:
        for spec in specs:
            table.add_row(spec.group, f"{spec.icon} {spec.name}", spec.kind, f"{class_name} ({how})",
                          spec.description)
    # A reference listing: wide enough that each description stays on one line when piped.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="A run folder (`shoplab bench run --out`)."),
    task: str | None = typer.Option(None, "--task", help="Show this task's episodes step by step (an id or a "
                                    "unique prefix of one)."),
    trial: int | None = typer.Option(None, "--trial", min=0, help="Only this trial (0-based)."),
    intent: str | None = typer.Option(None, "--intent", help="Only this intent: product | shop | voucher | web."),
    failed: bool = typer.Option(False, "--failed", help="Only failed episodes."),
    full: bool = typer.Option(False, "--full", help="Whole observations and the system prompt."),
) -> None:
    """Read a run's trajectories: every episode in one table, or with --task each step of its episodes."""
    from agents.viewer import episode_view, overview_table, read_episodes, select_episodes

    rows, skipped = read_episodes(run_dir)
    chosen = select_episodes(rows, task=task, trial=trial, intent=intent, failed=failed)
    if skipped:
        console.print(f"[yellow]{skipped} line(s) of results.jsonl are not episodes; skipped[/yellow]")
    if not chosen:
        fail("no episode matches these filters", 1)
    if task is None:
        passed = sum(bool(r.get("success")) for r in chosen)
        console.print(overview_table(chosen, title=f"{run_dir}: {len(chosen)} episodes, {passed} succeeded"))
        console.print(f"[dim]One episode step by step: shoplab bench show {run_dir} --task {chosen[0]['task_id']}[/dim]")
        return
    for row in chosen:
        console.print(episode_view(row, full=full))
        console.rule(style="dim")


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="Run folders to compare."),
           out: Path | None = typer.Option(None, "--out", help="Where report.md and the PNG go "
                                           "(default: <first run's parent>/report).")) -> None:
    """Compare runs side by side; writes a markdown table and a bar chart (PNG) of ASR per intent."""
    from agents.report import write_report

    try:
        table, png, md = write_report(run_dirs, out)
    except FileNotFoundError as exc:
        fail(exc, 1)
    console.print(table)
    console.print(f"wrote {md} and {png}")
