"""`shoplab demo`: serve the Gradio shopping assistant on this machine."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import typer

from shoplab_core.config import ConfigError, cli_config, set_option

DEFAULT_CONFIG = Path("configs/demo/default.yaml")


def _stop_cleanly_on_signals() -> None:
    """Ctrl-C and SIGTERM (a service manager's stop) both close the server cleanly.

    A process started in the background by a non-interactive shell inherits SIGINT as ignored, and
    SIGTERM would otherwise end it at once; both become the KeyboardInterrupt Gradio handles.
    """
    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def demo(
    config: Path = typer.Option(None, help="A demo YAML (llm:/agent:/demo: sections); default "
                                           "configs/demo/default.yaml when present."),
    data_dir: Path = typer.Option(None, help="The sandbox to shop in (default: the config's, runs/sandbox)."),
    llm_config: Path = typer.Option(None, help="An agent YAML (configs/agents/*.yaml) for the llm: and agent: "
                                               "sections."),
    llm: str = typer.Option(None, "--llm", help="LLM backend: transformers, vllm or openai."),
    model: str = typer.Option(None, help="Model: the bundled alias, an HF folder, or a served model's name."),
    base_url: str = typer.Option(None, help="openai backend: the server's /v1 address."),
    rewriter: str = typer.Option(None, help="`rule`, a trained rewrite stage folder, or `none` for no panel."),
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1: this machine only)."),
    port: int = typer.Option(None, help="Port (default 7860)."),
    concurrency: int = typer.Option(None, min=1, help="Episodes run at once across all users."),
    overrides: list[str] = set_option("Override a config key: --set demo.port=8000, --set agent.max_steps=20, "
                                      "--set llm.sampling.temperature=0.7 (repeatable)."),
) -> None:
    """Chat with the shopping agent, watch it solve benchmark tasks, see rewrites and the cart."""
    try:
        from ui.app import launch_demo
    except ImportError as exc:
        raise typer.BadParameter(f"the demo needs Gradio ({exc}): pip install -e '.[ui]'") from exc
    from ui.config import DemoConfig
    from ui.session import DemoError

    # defaults < the demo YAML < the agent YAML's llm:/agent: (--llm-config) < --set < the flags given.
    path = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = cli_config(DemoConfig, path, param_hint="--config")
    if llm_config:
        try:
            cfg.use_agent_config(llm_config)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--llm-config") from exc
    overrides = list(overrides or [])
    if rewriter is not None and rewriter.lower() in ("", "none", "off"):
        overrides.append("demo.rewriter=null")
        rewriter = None
    cfg = cli_config(DemoConfig, dataclasses.asdict(cfg), overrides=overrides, flags={
        "llm.backend": llm, "llm.model": model, "llm.base_url": base_url, "demo.data_dir": data_dir,
        "demo.host": host, "demo.port": port, "demo.concurrency": concurrency, "demo.rewriter": rewriter},
        where=str(path or llm_config or "the demo config"))
    _stop_cleanly_on_signals()
    try:
        launch_demo(cfg)
    except DemoError as exc:
        raise typer.BadParameter(str(exc)) from exc
