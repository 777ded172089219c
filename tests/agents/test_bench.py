"""The benchmark runner and the scripted agents, end to end on a small real sandbox."""

from __future__ import annotations

import json

import datasets
import pytest
from typer.testing import CliRunner

from agents.registry import agent_names, make_agent
from agents.runner import RunConfig, run_benchmark, summarize
from agents.scripted import HeuristicAgent, OracleAgent
from sandbox import ShoppingEnv
from shoplab_cli import app


def _tasks(world, per_intent):
    out, seen = [], {}
    for t in world.tasks.values():
        if seen.get(t.intent.value, 0) < per_intent:
            seen[t.intent.value] = seen.get(t.intent.value, 0) + 1
            out.append(t)
    return out


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def test_registry_knows_builtin_agents():
    assert {"oracle", "heuristic"} <= set(agent_names())
    with pytest.raises(KeyError, match="unknown agent"):
        make_agent("nope")


@pytest.mark.slow  # every dev task through the oracle
def test_oracle_solves_every_intent_without_the_gold_id(world, similarity, tmp_path):
    tasks = _tasks(world, 4)
    summary = run_benchmark(world, tasks, lambda: OracleAgent(similarity=similarity), tmp_path / "oracle",
                            RunConfig(agent="oracle"), similarity=similarity, progress=False)
    for intent in ("product", "shop", "voucher", "web"):
        assert summary[intent]["asr"] == 1.0, (intent, summary[intent])
    # It reaches products through the tools: every recommended id appeared in a find_product observation.
    for row in _rows(tmp_path / "oracle" / "results.jsonl"):
        seen = " ".join(m["content"] for m in row["trajectory"] if m["role"] == "tool" and m["name"] == "find_product")
        assert all(pid in seen for pid in row["recommended"])
        assert row["steps"] <= 30


def test_oracle_never_reads_the_gold_id(world, similarity):
    """Hide the gold ids from the reward: the oracle must still succeed by rules alone."""
    task = next(t for t in world.tasks.values() if t.intent.value == "product")
    blind = task.model_copy(update={"reward": [s.model_copy(update={"product_id": "hidden"}) for s in task.reward]})
    env = ShoppingEnv(world, blind)
    OracleAgent(similarity=similarity).run_episode(env)
    assert env.state.recommended, "the oracle recommended nothing"
    scored = ShoppingEnv(world, task)
    scored.state.recommended = env.state.recommended
    assert scored.score(similarity).success


def test_heuristic_runs_every_intent_and_is_a_floor(world, similarity, tmp_path):
    tasks = _tasks(world, 3)
    summary = run_benchmark(world, tasks, HeuristicAgent, tmp_path / "h", RunConfig(agent="heuristic"),
                            similarity=similarity, progress=False)
    assert summary["overall"]["n"] == len(tasks)
    assert 0.0 <= summary["overall"]["asr"] < 1.0
    assert set(summary) >= {"overall", "product", "shop", "voucher", "web", "run"}


def test_resume_after_kill_has_no_lost_or_repeated_episodes(world, similarity, tmp_path):
    tasks = _tasks(world, 2)
    out = tmp_path / "run"
    config = RunConfig(agent="heuristic", trials=2)
    run_benchmark(world, tasks, HeuristicAgent, out, config, similarity=similarity, progress=False)
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 2 * len(tasks)
    # Simulate a kill: drop the last three episodes and leave half a line behind.
    text = "".join(json.dumps(r) + "\n" for r in rows[:-3]) + json.dumps(rows[-3])[:40]
    (out / "results.jsonl").write_text(text, encoding="utf-8")
    summary = run_benchmark(world, tasks, HeuristicAgent, out, config, similarity=similarity, progress=False)
    again = _rows(out / "results.jsonl")
    keys = [(r["task_id"], r["trial"]) for r in again]
    assert len(keys) == len(set(keys)) == 2 * len(tasks)
    assert summary["overall"]["n"] == 2 * len(tasks)
    assert "pass^2" in summary["overall"]


def test_resume_mends_a_last_row_without_newline_and_repeated_rows(world, similarity, tmp_path):
    tasks = _tasks(world, 2)
    out = tmp_path / "run"
    config = RunConfig(agent="heuristic")
    run_benchmark(world, tasks, HeuristicAgent, out, config, similarity=similarity, progress=False)
    rows = _rows(out / "results.jsonl")
    # A complete last row without its newline, and one row written twice (two writers, before the lock).
    text = "".join(json.dumps(r) + "\n" for r in rows[:-2]) + json.dumps(rows[0]) + "\n" + json.dumps(rows[-2])
    (out / "results.jsonl").write_text(text, encoding="utf-8")
    summary = run_benchmark(world, tasks, HeuristicAgent, out, config, similarity=similarity, progress=False)
    again = _rows(out / "results.jsonl")
    keys = [(r["task_id"], r["trial"]) for r in again]
    assert len(keys) == len(set(keys)) == len(rows) and summary["overall"]["n"] == len(rows)
    assert summary["run"]["new_episodes"] == 1  # only the missing episode ran again


def test_two_runs_cannot_write_one_run_folder(world, similarity, tmp_path):
    import fcntl

    from agents.runner import RunFolderBusy

    out = tmp_path / "run"
    out.mkdir()
    with (out / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `bench run` holds it
        with pytest.raises(RunFolderBusy, match="another bench run"):
            run_benchmark(world, _tasks(world, 1), HeuristicAgent, out, RunConfig(agent="heuristic"),
                          similarity=similarity, progress=False)
    assert not (out / "results.jsonl").exists()
    run_benchmark(world, _tasks(world, 1), HeuristicAgent, out, RunConfig(agent="heuristic"), similarity=similarity,
                  progress=False)  # released: the next run goes ahead


def test_run_dir_refuses_another_agent(world, similarity, tmp_path):
    tasks = _tasks(world, 1)
    run_benchmark(world, tasks, HeuristicAgent, tmp_path, RunConfig(agent="heuristic"), similarity=similarity,
                  progress=False)
    with pytest.raises(ValueError, match="holds a run of agent"):
        run_benchmark(world, tasks, HeuristicAgent, tmp_path, RunConfig(agent="oracle"), similarity=similarity,
                      progress=False)


def test_parallel_run_matches_sequential(world, similarity, tmp_path):
    tasks = _tasks(world, 3)
    a = run_benchmark(world, tasks, HeuristicAgent, tmp_path / "seq", RunConfig(agent="heuristic"),
                      similarity=similarity, progress=False)
    b = run_benchmark(world, tasks, HeuristicAgent, tmp_path / "par", RunConfig(agent="heuristic", parallel=3),
                      similarity=similarity, progress=False)
    assert a["overall"]["asr"] == b["overall"]["asr"]
    assert sorted(r["task_id"] for r in _rows(tmp_path / "par" / "results.jsonl")) == sorted(t.task_id for t in tasks)


def test_trajectories_load_as_hf_chat_messages(world, similarity, tmp_path):
    tasks = _tasks(world, 1)
    run_benchmark(world, tasks, lambda: OracleAgent(similarity=similarity), tmp_path, RunConfig(agent="oracle"),
                  similarity=similarity, progress=False)
    rows = _rows(tmp_path / "results.jsonl")
    ds = datasets.Dataset.from_list([{"messages": r["trajectory"]} for r in rows])
    first = ds[0]["messages"]
    assert first[0]["role"] == "user"
    calls = [m for m in first if m["role"] == "assistant"]
    assert calls and all(m["tool_calls"][0]["function"]["name"] for m in calls)
    assert json.loads(calls[0]["tool_calls"][0]["function"]["arguments"])["q"]


def test_summary_pass_hat_k():
    rows = [{"task_id": "a", "intent": "product", "success": s, "constraint_score": 1.0, "steps": 1, "seconds": 0.1}
            for s in (True, True, False)]
    s = summarize(rows, trials=3)
    assert s["overall"]["pass^1"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["overall"]["pass^2"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["overall"]["pass^3"] == 0.0


def test_cli_bench_run_and_report(small_sandbox, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_run"
    result = runner.invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "heuristic",
                                 "--out", str(out), "--limit", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 4
    assert "ASR" in result.output
    report = runner.invoke(app, ["bench", "report", str(out)])
    assert report.exit_code == 0 and "cli_run" in report.output
    bad = runner.invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "nope", "--out",
                              str(tmp_path / "x")])
    assert bad.exit_code != 0


def test_bench_tools_lists_every_tool_with_its_group_and_toolkit():
    from sandbox import BUILTIN_TOOLKITS, toolkit_classes

    result = CliRunner().invoke(app, ["bench", "tools"], terminal_width=250)
    assert result.exit_code == 0, result.output
    specs = [s for kit in BUILTIN_TOOLKITS for s in kit.specs()]
    specs += [s for cls in toolkit_classes().values() for s in cls.specs()]
    assert len(specs) >= 12
    for spec in specs:
        assert spec.name in result.output and spec.group in result.output
    assert "toolkits: {recsys: ...}" in result.output
