"""`shoplab recsys ...`: train and evaluate zoo models, simulate behaviour logs over the sandbox."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Recommender zoo: train | eval | list | simulate | build-service.", no_args_is_help=True)
console = Console(width=max(140, shutil.get_terminal_size().columns))

SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set train.epochs=3 (repeatable).")


def _config(config: Path, overrides: list[str] | None):
    from recsys_core.config import ExperimentConfig

    try:
        return ExperimentConfig.from_yaml(config, overrides)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config/--set") from exc


def _fail(exc: Exception) -> None:
    console.print(f"[red]{exc}[/red]", soft_wrap=True)
    raise typer.Exit(2) from exc


def _summary(results: list[dict]) -> dict:
    """mean ± std over seeds of every test metric."""
    keys = results[0]["test"].keys()
    out = {}
    for key in keys:
        values = [r["test"][key] for r in results]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


@app.command()
def train(config: Path = typer.Option(..., "--config", help="Experiment YAML (see recsys_core/models/*/)."),
          overrides: list[str] | None = SetOpt,
          seeds: list[int] | None = typer.Option(None, "--seed", help="Seed(s); several give mean ± std."),
          out_dir: Path | None = typer.Option(None, "--out-dir", help="Run folder (default: the config's out_dir)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last.pt.")) -> None:
    """Train one model; with several --seed, one run folder per seed plus summary.json."""
    from recsys_core.trainer import Trainer

    cfg = _config(config, overrides)
    base_dir = Path(out_dir or cfg.out_dir)
    results = []
    for seed in seeds or [cfg.train.seed]:
        cfg.train.seed = seed
        run_dir = base_dir / f"seed{seed}" if seeds and len(seeds) > 1 else base_dir
        try:
            result = Trainer(cfg, run_dir).fit(resume=resume)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            _fail(exc)
        results.append(result)
        console.print_json(json.dumps({"run_dir": str(run_dir), "test": result["test"],
                                       "train_seconds": result["train_seconds"]}))
    if len(results) > 1:
        summary = {"model": cfg.model, "seeds": [r["seed"] for r in results], "test": _summary(results),
                   "train_seconds": [r["train_seconds"] for r in results]}
        (base_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        table = Table(title=f"{cfg.model}: test over {len(results)} seeds")
        table.add_column("metric")
        table.add_column("mean ± std")
        for key, v in summary["test"].items():
            table.add_row(key, f"{v['mean']:.4f} ± {v['std']:.4f}")
        console.print(table)


@app.command("eval")
def evaluate(run_dir: Path = typer.Option(..., "--run-dir", help="A finished run folder."),
             split: str = typer.Option("test", "--split", help="valid | test")) -> None:
    """Re-evaluate a trained run from its folder (its config.yaml and best.pt)."""
    from recsys_core.trainer import evaluate_run

    if split not in ("valid", "test"):
        raise typer.BadParameter("valid or test", param_hint="--split")
    try:
        console.print_json(json.dumps(evaluate_run(run_dir, split)))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(exc)


@app.command("list")
def list_models() -> None:
    """Registered models, the tasks they train under and their config files."""
    from recsys_core.registry import get_model, model_names

    table = Table(title="recsys zoo")
    for col in ("model", "tasks", "config", "smoke"):
        table.add_column(col)
    for name in model_names():
        entry = get_model(name)
        table.add_row(name, ", ".join(entry.tasks), str(entry.default_config.relative_to(Path.cwd()))
                      if entry.default_config.is_relative_to(Path.cwd()) else str(entry.default_config),
                      "yes" if entry.smoke_config.exists() else "no")
    console.print(table)
