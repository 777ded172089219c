"""Every package's public names load on first use, and the CLI starts without the heavy libraries."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shoplab_core.lazy import lazy_exports

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["shoplab_core", "sandbox", "sandbox.catalogue", "rewrite", "recsys_core", "agents", "agents.llm",
            "agents.react", "agents.scripted", "training", "training.distill", "training.beque", "ui"]
# What `shoplab --help` and every group's `--help` must not import: each costs seconds.
HEAVY = ["torch", "transformers", "langgraph", "datasets", "tantivy", "gradio", "vllm", "trl", "peft", "pandas"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_what_its_module_defines(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exposes no public names"
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None
        assert name in dir(module)


def test_an_unknown_name_is_an_attribute_error_and_a_name_exported_twice_is_refused():
    import sandbox

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        sandbox.NoSuchThing  # noqa: B018
    assert not hasattr(sandbox, "NoSuchThing")
    with pytest.raises(ValueError, match="'Task' is exported by both"):
        lazy_exports("pkg", {"pkg.a": ["Task"], "pkg.b": ["Task"]})


def test_the_cli_and_each_group_start_without_torch_langgraph_or_the_engines():
    """`shoplab --help` answered in ~5 s when the CLI imported every package eagerly (torch, LangGraph,
    datasets); the commands import what they use when they run (benchmarks/bench_cli_startup.py times it)."""
    code = f"""
import json, sys
import typer.main
from shoplab_cli import app
group = typer.main.get_command(app)
ctx = group.make_context("shoplab", ["--help"], resilient_parsing=True)
for name in group.list_commands(ctx):
    command = group.get_command(ctx, name)
    command.get_help(ctx)
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
