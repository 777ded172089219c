"""`shoplab llm ...`: prepare the bundled model and talk to any configured backend."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shoplab_core.config import cli_config, config_option, set_option
from shoplab_core.errors import fail

app = typer.Typer(help="LLM backends: prepare the default model, try a backend.", no_args_is_help=True)
console = Console()


@app.command()
def prepare(out: Path | None = typer.Option(None, "--out", help="Folder (default: $SHOPLAB_HOME/models/...)."),
            force: bool = typer.Option(False, "--force")) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into an HF folder (once; nothing is downloaded)."""
    from agents.llm.base import LLMError
    from agents.llm.models import prepare_default_model

    try:
        path = prepare_default_model(out, force=force)
    except LLMError as exc:
        fail(exc)
    console.print(f"default model ready: {path}")


@app.command()
def chat(
    message: str = typer.Argument(..., help="One user message."),
    config: Path | None = config_option(help="A YAML with an `llm:` section (e.g. configs/agents/*.yaml)."),
    overrides: list[str] | None = set_option("Override an LLM setting: --set sampling.temperature=0.7."),
    llm: str | None = typer.Option(None, "--llm", help="transformers | vllm | openai (default: transformers)"),
    model: str | None = typer.Option(None, "--model", help="default: smollm2-135m-instruct"),
    base_url: str | None = typer.Option(None, "--base-url"),
    system: str | None = typer.Option(None, "--system"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0),
) -> None:
    """Send one message through a backend and print the reply with its token counts."""
    from agents.llm import LLMConfig, LLMError, make_llm

    cfg = cli_config(LLMConfig, config, "llm", overrides, {
        "backend": llm, "model": model, "base_url": base_url, "sampling.max_new_tokens": max_new_tokens,
        "sampling.temperature": temperature})
    try:
        client = make_llm(cfg)
    except (LLMError, ValueError) as exc:
        fail(exc)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    try:
        result = client.chat(messages)
    finally:
        client.close()
    if result.error:
        fail(result.error, 1)
    console.print(result.text)
    console.print(f"[dim]{result.prompt_tokens} prompt + {result.completion_tokens} completion tokens, "
                  f"{result.latency_s:.2f} s[/dim]")
