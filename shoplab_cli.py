"""The one `shoplab` command; each package contributes its own sub-command group.

Starting it is cheap (`shoplab --help` < 1 s): packages expose their names lazily and commands import
torch, LangGraph or an engine only when they run. A user's mistake (`shoplab_core.errors.UserError`)
is one red line and exit status 2, never a traceback.
"""

import os
import sys

import typer
from typer.core import TyperGroup

from shoplab_core.errors import DEBUG_ENV, UserError, print_error, show_tracebacks
from shoplab_core.output import configure_output

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


class ShoplabGroup(TyperGroup):
    """The top-level group: every command runs inside it, so every error a user can fix is shown here,
    the same way: a wrong option value, a missing path, a step not yet run."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # bad options (parsing, typer.BadParameter) and other usage errors
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)  # usage errors know their command
            print_error(f"{message} (`{ctx.command_path} --help` lists the options)" if ctx else message)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        except UserError as exc:
            if show_tracebacks():
                raise
            print_error(str(exc))
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=ShoplabGroup, no_args_is_help=True,
                  help="shoplab: LLM shopping agents and query rewriting on a real search engine. "
                       f"Quiet by default (--verbose shows the libraries' output); {DEBUG_ENV}=1 shows the "
                       "traceback behind an error.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="Show the libraries' warnings, logs and weight-loading bars too.")) -> None:
    configure_output(verbose)


app.add_typer(sandbox_app, name="sandbox")
app.add_typer(bench_app, name="bench")
app.add_typer(llm_app, name="llm")
app.add_typer(rewrite_app, name="rewrite")
app.add_typer(recsys_app, name="recsys")
app.add_typer(train_app, name="train")
app.command("demo")(demo_command)

if __name__ == "__main__":
    sys.exit(app(prog_name="shoplab"))
