"""The one `shoplab` command; each package contributes its own sub-command group."""

import os

import typer

# Nothing is ever fetched from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agents.cli import app as bench_app  # noqa: E402
from agents.llm.cli import app as llm_app  # noqa: E402
from recsys_core.cli import app as recsys_app  # noqa: E402
from sandbox.cli import app as sandbox_app  # noqa: E402
from training.beque.cli import app as rewrite_app  # noqa: E402
from training.train_cli import app as train_app  # noqa: E402
from ui.cli import demo as demo_command  # noqa: E402

app = typer.Typer(help="shoplab: LLM shopping agents and query rewriting on a real search engine.",
                  no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(bench_app, name="bench")
app.add_typer(llm_app, name="llm")
app.add_typer(rewrite_app, name="rewrite")
app.add_typer(recsys_app, name="recsys")
app.add_typer(train_app, name="train")
app.command("demo")(demo_command)

if __name__ == "__main__":
    app()
