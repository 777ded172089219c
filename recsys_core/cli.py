"""`shoplab recsys ...`: train and evaluate zoo models, simulate behaviour logs over the sandbox."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shoplab_core.config import cli_config, data_dir_option, load_config, set_option
from shoplab_core.errors import fail

app = typer.Typer(help="Recommender zoo: train | eval | list | simulate | build-service.", no_args_is_help=True)
console = Console(width=max(140, shutil.get_terminal_size().columns))

SetOpt = set_option()


def _config(config: Path, overrides: list[str] | None, out_dir: Path | None = None):
    from recsys_core.config import ExperimentConfig

    return cli_config(ExperimentConfig, config, overrides=overrides,
                      flags={"source": str(config), "out_dir": out_dir})


def _fail(exc: Exception) -> None:
    fail(exc)


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

    cfg = _config(config, overrides, out_dir)
    base_dir = Path(cfg.out_dir)
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


@app.command()
def simulate(data_dir: Path = data_dir_option("A built sandbox (shoplab sandbox build)."),
             users: int = typer.Option(..., "--users", min=1, help="Number of simulated shoppers."),
             out: Path = typer.Option(..., "--out", help="Output folder (items, impressions, sequences)."),
             items: int | None = typer.Option(None, "--items", min=0,
                                              help="Filler products added to the task products "
                                                   "(default: a ~20,000-item universe)."),
             seed: int = typer.Option(0, "--seed"),
             sessions_per_user: int = typer.Option(8, "--sessions-per-user", min=1),
             params: list[str] | None = typer.Option(None, "--set", "--param", help="Simulator parameter, e.g. "
                                                     "--set click_bias=-3.5 (repeatable; see SimulatorParams)."),
             progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Simulate shoppers' impressions, clicks and purchases over a sandbox's catalogue."""
    from recsys_core.simulate import SimulatorParams
    from recsys_core.simulate import simulate as run

    try:
        sim_params = load_config(SimulatorParams, overrides=params, where="--set", label="simulator parameters")
        sim_params.validate()
        manifest = run(data_dir, out, users, n_fillers=items, seed=seed, sessions_per_user=sessions_per_user,
                       params=sim_params, progress=progress)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        _fail(exc)
    console.print_json(json.dumps({"out": str(out), "counts": manifest["counts"],
                                   "click_rate": round(manifest["click_rate"], 4), "seconds": manifest["seconds"]}))


@app.command("build-service")
def build_service(sim: Path = typer.Option(..., "--sim", help="The simulator folder the runs were trained on."),
                  ranker: Path = typer.Option(..., "--ranker", help="A CTR run folder (e.g. DIN)."),
                  tokenizer: Path | None = typer.Option(None, "--tokenizer", help="A semantic-ID tokenizer run folder "
                                                        "(similar_products; needed by --retriever)."),
                  retriever: Path | None = typer.Option(None, "--retriever", help="A generative-retrieval run folder "
                                                        "(recommend_next)."),
                  out: Path = typer.Option(..., "--out", help="Service folder to write (service.json)."),
                  reasoner: Path | None = typer.Option(None, "--reasoner",
                                                       help="Optional REG4Rec run (recommend_with_reasoning).")
                  ) -> None:
    """Bundle a ranker (and optionally a tokenizer, retriever and reasoner) trained on one simulation for the agent tools.

    The agent config then names the folder: `toolkits: {recsys: {service: <out>}}`, with `recsys` in `tools`."""
    from recsys_core.service import write_service

    try:
        spec = write_service(out, sim=sim, ranker=ranker, tokenizer=tokenizer, retriever=retriever,
                             reasoner=reasoner)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(exc)
    console.print_json(json.dumps(spec))
