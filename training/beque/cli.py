"""`shoplab rewrite ...`: BEQUE query rewriting, one command per step, plus `run` for the whole chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.console import Console

from shoplab_core.config import cli_config, config_option, set_option
from shoplab_core.errors import fail

app = typer.Typer(help="BEQUE query rewriting: build-data → sft → feedback → align → eval; query.",
                  no_args_is_help=True)
console = Console(width=max(140, shutil.get_terminal_size().columns))
DEFAULT_CONFIG = Path("configs/rewrite/beque_smollm2.yaml")

ConfigOpt = config_option(DEFAULT_CONFIG, help="Pipeline YAML (see configs/rewrite/); --set, flags override it.")
SetOpt = set_option("Override a key: --set sft.epochs=2 (repeatable).")
DataDirOpt = typer.Option(None, "--data-dir", help="Built sandbox whose retrieval is the offline system.")
RunDirOpt = typer.Option(None, "--run-dir", help="Where every step reads and writes.")
ModelOpt = typer.Option(None, "--model", help="Base model: HF folder or smollm2-135m-instruct.")


def _pipeline(config: Path, data_dir: Path | None, run_dir: Path | None, model: str | None,
              overrides: list[str] | None = None):
    """defaults < the YAML < --set < --data-dir/--run-dir/--model (when given)."""
    from training.beque.pipeline import RewritePipeline, RewritePipelineConfig

    cfg = cli_config(RewritePipelineConfig, config, overrides=overrides,
                     flags={"data_dir": data_dir, "run_dir": run_dir, "model": model})
    return RewritePipeline(cfg)


def _fail(exc: Exception) -> None:
    fail(exc)


def _step(pipe, method: str, *args):
    """Run one pipeline step; a missing input or a bad setting is a message and exit code 2."""
    try:
        return getattr(pipe, method)(*args)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)


@app.command("build-data")
def build_data(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
               model: str | None = ModelOpt, overrides: list[str] | None = SetOpt) -> None:
    """Long-tail queries with gold products, rejection-sampled rewrites, the multi-instruction SFT set."""
    stats = _step(_pipeline(config, data_dir, run_dir, model, overrides), "build_data")
    console.print_json(json.dumps(stats))


@app.command()
def sft(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
        model: str | None = ModelOpt, overrides: list[str] | None = SetOpt,
        resume: bool = typer.Option(False, "--resume")) -> None:
    """Multi-instruction SFT (TRL SFTTrainer, LoRA)."""
    out = _step(_pipeline(config, data_dir, run_dir, model, overrides), "sft", resume)
    console.print(f"SFT stage written to {out}")


@app.command()
def feedback(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
             model: str | None = ModelOpt, overrides: list[str] | None = SetOpt) -> None:
    """Beam-search candidates of the SFT model, scored through the sandbox's retrieval, partially ordered."""
    stats = _step(_pipeline(config, data_dir, run_dir, model, overrides), "feedback")
    console.print_json(json.dumps(stats))


@app.command()
def align(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
          model: str | None = ModelOpt, overrides: list[str] | None = SetOpt,
          loss: str = typer.Option("pro", "--loss", help="pro | dpo"),
          resume: bool = typer.Option(False, "--resume")) -> None:
    """Objective alignment on the feedback's partial orders: PRO (listwise) or DPO (pairs)."""
    if loss not in ("pro", "dpo"):
        raise typer.BadParameter("choose pro or dpo", param_hint="--loss")
    out = _step(_pipeline(config, data_dir, run_dir, model, overrides), "align", loss, resume)
    console.print(f"{loss.upper()} stage written to {out}")


@app.command("eval")
def evaluate(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
             model: str | None = ModelOpt, overrides: list[str] | None = SetOpt,
             only: list[str] | None = typer.Option(None, "--only", help="Only these rewriters; the rows of the others from an earlier eval are kept.")) -> None:
    """Relevance / increment / hitrate on held-out queries and the heuristic agent's ASR, per rewriter."""
    from training.beque.pipeline import markdown_table

    pipe = _pipeline(config, data_dir, run_dir, model, overrides)
    table = _step(pipe, "evaluate", only)
    console.print(markdown_table(table, pipe.cfg.eval.ks))
    console.print(f"table, plot and agent runs in {pipe.cfg.path('eval')}")


@app.command()
def run(config: Path = ConfigOpt, data_dir: Path | None = DataDirOpt, run_dir: Path | None = RunDirOpt,
        model: str | None = ModelOpt, overrides: list[str] | None = SetOpt) -> None:
    """The whole chain: build-data → sft → feedback → align (PRO, then DPO) → eval."""
    from training.beque.pipeline import markdown_table

    pipe = _pipeline(config, data_dir, run_dir, model, overrides)
    result = _step(pipe, "run_all")
    console.print(markdown_table(result["table"], pipe.cfg.eval.ks))
    console.print_json(json.dumps(result["timings"]))


@app.command()
def query(text: str = typer.Argument(..., help="The query to rewrite."),
          rewriter: str = typer.Option(..., "--rewriter", help="`rule`, a stage folder (runs/rewrite/align_pro), "
                                       "a LoRA adapter folder or a model folder."),
          n: int = typer.Option(1, "-n", min=1, max=8, help="Candidates (beam search) to show."),
          data_dir: Path | None = typer.Option(None, "--data-dir", help="Also show what each retrieves here."),
          k: int = typer.Option(5, "-k", min=1, max=20)) -> None:
    """Rewrite one query; with --data-dir, show the top products of the query and of each rewrite."""
    from rewrite import RuleRewriter, load_rewriter

    try:
        model = load_rewriter(rewriter)
    except (OSError, ValueError) as exc:
        _fail(exc)
    rewrites = model.candidates(text) if isinstance(model, RuleRewriter) else model.candidates([text], n)[0]
    rewrites = rewrites[:n]
    console.print_json(json.dumps({"query": text, "rewrites": rewrites}))
    if data_dir is not None:
        from sandbox import SearchRequest, ShoppingWorld, query_terms
        from sandbox.rewrite_stage import search_with_rewrites

        world = ShoppingWorld.open(data_dir)
        for label, texts in [("query", [])] + [(f"fused with {r!r}", [r]) for r in rewrites]:
            terms = tuple(query_terms(text))
            page = search_with_rewrites(world.search, SearchRequest(terms=terms, page_size=k), texts)
            console.print(f"[bold]{label}[/bold]")
            for h in page.hits:
                console.print(f"  {h.product_id}  {h.product['title'][:90]}  ₱{h.product['price']}")
