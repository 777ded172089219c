"""The `shoplab` command as a newcomer meets it: fast help, one error style, a default sandbox folder,
quiet third-party output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoplab_core.output import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent


def shoplab(*argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 120):
    # Not the quiet settings an in-process CLI test may have left in this process's environment.
    base = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    return subprocess.run([sys.executable, "-m", "shoplab_cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**base, "COLUMNS": "200", **(env or {})})


# A user's mistakes, and a word of what to do that each error must carry.
MISTAKES = {
    "no sandbox at --data-dir": (["bench", "run", "--data-dir", "runs/nope", "--agent", "heuristic", "--out", "r"],
                                 "shoplab sandbox build --data-dir runs/nope"),
    "no sandbox at the default folder": (["sandbox", "search", "phone case"], "shoplab sandbox build"),
    "a task file that is not there": (["sandbox", "build", "--tasks", "data/typo.jsonl", "--products", "2000"],
                                      "path 'data/typo.jsonl' does not exist"),
    "a stage folder not trained yet": (["rewrite", "query", "--rewriter", "runs/rewrite/align_pro", "red shoes"],
                                       "does not exist"),
    "a model that is not there": (["llm", "chat", "hi", "--model", "runs/models/typo"], "does not exist"),
    "a run folder that is not there": (["bench", "report", "runs/typo"], "does not exist"),
    "an option value of the wrong type": (["sandbox", "build", "--products", "many"], "shoplab sandbox build --help"),
    "a command that does not exist": (["sandbox", "biuld"], "No such command 'biuld'"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_user_mistake_is_one_line_with_what_to_do_and_exit_status_2_or_1(case, tmp_path):
    argv, hint = MISTAKES[case]
    out = shoplab(*argv, cwd=tmp_path)
    assert out.returncode in (1, 2), out
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert hint in lines[0]
    assert "Repo id" not in lines[0]  # a local path never reaches the hub resolver


def test_shoplab_debug_shows_the_traceback_behind_a_user_error(tmp_path):
    out = shoplab("sandbox", "search", "phone case", cwd=tmp_path, env={"SHOPLAB_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "SandboxNotFoundError" in out.stderr


def test_data_dir_defaults_to_runs_sandbox(small_sandbox, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sandbox").symlink_to(small_sandbox)
    out = shoplab("sandbox", "search", "phone case", "--price", "0-100000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"product_id"' in out.stdout


@pytest.mark.slow
def test_model_loading_is_quiet_unless_verbose(tmp_path):
    """transformers' "Loading weights" bar and the libraries' warnings are noise to a user; --verbose
    brings them back."""
    argv = ["llm", "chat", "Say hi", "--llm", "transformers", "--max-new-tokens", "2"]
    quiet = shoplab(*argv, cwd=ROOT, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr
    verbose = shoplab("--verbose", *argv, cwd=ROOT, timeout=300)
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading weights" in verbose.stderr
