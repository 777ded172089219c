"""The one kind of error a user's mistake raises, and how the CLI shows it.

A path that is not there, a value out of range, a step not yet run: these are the user's to fix, so
`shoplab` prints the message (what is wrong and what to do) on one line and exits with status 2,
never a traceback. Library code raises subclasses that also derive from the builtin they refine
(`ValueError`, `FileNotFoundError`), so callers that catch those keep working.
"""

from __future__ import annotations

import os
from typing import NoReturn

DEFAULT_DATA_DIR = "runs/sandbox"  # where `make run` builds the sandbox; every --data-dir defaults to it
DEBUG_ENV = "SHOPLAB_DEBUG"        # set to 1 to see the traceback behind a user error too


class UserError(Exception):
    """A mistake in what was asked; its message says what to do."""


def show_tracebacks() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _print_labelled(label: str, message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"{label} {escape(message)}")


def print_error(message: str) -> None:
    """A user-facing error, the one way every command shows it: `Error: ...` on stderr."""
    _print_labelled("[bold red]Error:[/]", message)


def print_warning(message: str) -> None:
    """Something the user must know although the command goes on (a fallback, a skipped input)."""
    _print_labelled("[bold yellow]Note:[/]", message)


def fail(error: str | BaseException, code: int = 2) -> NoReturn:
    """Show `error` (`print_error`) and end the command with exit status `code`."""
    import typer

    if isinstance(error, BaseException) and show_tracebacks():
        raise error
    print_error(str(error))
    raise typer.Exit(code)
