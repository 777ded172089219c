"""`shoplab bench show`: reading a finished run's trajectories in the terminal (and as HTML for the demo)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from agents.viewer import episode_html, read_episodes, select_episodes
from shoplab_cli import app


@pytest.fixture(scope="module")
def heuristic_run(small_sandbox, tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "heuristic"
    result = CliRunner().invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "heuristic",
                                      "--out", str(out), "--limit", "2"])
    assert result.exit_code == 0, result.output
    return out


def show(*argv: str):
    return CliRunner().invoke(app, ["bench", "show", *argv], terminal_width=160)


def test_the_overview_lists_every_episode_with_its_outcome(heuristic_run):
    rows, skipped = read_episodes(heuristic_run)
    assert len(rows) == 8 and skipped == 0
    result = show(str(heuristic_run))
    assert result.exit_code == 0, result.output
    for row in rows:
        assert row["task_id"] in result.output
    assert f"8 episodes, {sum(r['success'] for r in rows)} succeeded" in result.output
    assert "--task" in result.output  # says how to open one


def test_one_episode_shows_request_calls_results_and_verdict(heuristic_run):
    rows, _ = read_episodes(heuristic_run)
    row = rows[0]
    result = show(str(heuristic_run), "--task", row["task_id"][:14])  # a unique prefix is enough
    assert result.exit_code == 0, result.output
    text = result.output
    assert row["trajectory"][0]["content"][:40] in text.replace("\n", " ") or "request" in text
    assert "find_product(" in text and "recommend_product(" in text
    first_hit = json.loads(row["trajectory"][2]["content"])[0]["product_id"]
    assert first_hit in text  # the search results as a table of products
    assert "scored" in text and row["recommended"][0] in text


def test_filters_and_unknown_tasks(heuristic_run):
    rows, _ = read_episodes(heuristic_run)
    failed = select_episodes(rows, failed=True)
    assert failed and all(not r["success"] for r in failed)
    assert {r["intent"] for r in select_episodes(rows, intent="shop")} == {"shop"}
    result = show(str(heuristic_run), "--task", "no-such-task")
    assert result.exit_code != 0 and "no task 'no-such-task'" in result.output
    ambiguous = show(str(heuristic_run), "--task", "p")
    assert ambiguous.exit_code != 0 and "matches 2 tasks" in ambiguous.output


def test_hostile_rows_are_shown_literally_cut_and_counted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    huge = "x" * 50_000
    row = {"task_id": "t-1", "intent": "product", "trial": 0, "success": False, "constraint_score": 0.0,
           "steps": 1, "seconds": 0.1, "recommended": [], "per_product": [],
           "trajectory": [{"role": "user", "content": "[bold red]not markup[/bold red] <script>alert(1)</script>"},
                          {"role": "assistant", "content": "", "tool_calls": [
                              {"function": {"name": "find_product", "arguments": "{not json"}}]},
                          {"role": "tool", "name": "find_product", "content": huge}]}
    (run / "results.jsonl").write_text("garbage line\n" + json.dumps(row) + "\n[1, 2]\n")
    rows, skipped = read_episodes(run)
    assert len(rows) == 1 and skipped == 2
    result = show(str(run), "--task", "t-1")
    assert result.exit_code == 0, result.output
    assert "[bold red]not markup[/bold red]" in result.output
    assert "more characters" in result.output and len(result.output) < 10_000
    assert "2 line(s) of results.jsonl are not episodes" in result.output
    html = episode_html(row)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_folder_without_results_is_one_clear_error(tmp_path):
    result = show(str(tmp_path))
    assert result.exit_code == 2 and "has no results.jsonl" in result.output
