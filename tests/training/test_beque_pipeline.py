"""The BEQUE pipeline through the CLI on tiny data with a tiny locally built model, plus the
integration points: `bench run --rewriter`, the `rewrite_query` agent tool, stage resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rewrite.data import read_jsonl
from shoplab_cli import app
from tests.tiny_lm import build_tiny_chat_model

pytestmark = pytest.mark.slow  # trains the BEQUE stages on tiny data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    goals = json.loads((ROOT / "data" / "webshop" / "goal_query_map.json").read_text())
    corpus = [g + " " + " ".join(q) for g, q in list(goals.items())[:400]]
    corpus += ["You write product search queries. Rewrite as a product search query: Yes No rewrite: drop:"] * 5
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_lm"), corpus, vocab_size=800)


def _config(tmp_path: Path, small_sandbox: Path, tiny_model: Path, **extra) -> Path:
    cfg = {
        "model": str(tiny_model), "data_dir": str(small_sandbox), "run_dir": str(tmp_path / "run"), "seed": 0,
        "data": {"n_train_queries": 40, "n_heldout_queries": 10, "max_webshop_pairs": 10,
                 "webshop_pairs": str(ROOT / "data" / "webshop" / "goal_query_map.json"),
                 "llm_candidate_queries": 4, "llm_samples": 2},
        "lora": {"r": 4, "alpha": 8},
        "sft": {"max_steps": 4, "batch_size": 8, "save_steps": 2, "learning_rate": 1e-3},
        "feedback": {"n_queries": 8, "num_beams": 3, "num_samples": 2, "batch_size": 8, "max_new_tokens": 8,
                     "w_fact": 0.5},
        "align": {"max_steps": 2, "batch_size": 2, "max_length": 96, "validation_queries": 6, "eval_every_steps": 1},
        "eval": {"n_heldout": 10, "agent_task_limit": 12, "batch_size": 16},
        **extra,
    }
    path = tmp_path / "rewrite.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_every_rewrite_step_runs_from_the_cli_on_tiny_data(small_sandbox, tiny_model, tmp_path):
    runner = CliRunner()
    config = _config(tmp_path, small_sandbox, tiny_model)
    run = tmp_path / "run"

    # Steps refuse to run out of order, with the command to run first.
    early = runner.invoke(app, ["rewrite", "align", "--config", str(config), "--loss", "pro"])
    assert early.exit_code == 2 and "shoplab rewrite feedback" in " ".join(early.output.split())  # rich may wrap

    _ok(runner.invoke(app, ["rewrite", "build-data", "--config", str(config)]))
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["train_queries"] == 40 and stats["heldout_queries"] == 10 and stats["llm_sampled_queries"] == 4
    sft_rows = read_jsonl(run / "data" / "sft.jsonl")
    assert {r["task"] for r in sft_rows} >= {"rewrite", "quality"} and len(sft_rows) == stats["sft_examples"]
    assert all(r["completion"][0]["role"] == "assistant" and r["completion"][0]["content"] for r in sft_rows)
    # Rejection sampling keeps only candidates that found the gold at least as high as the query did.
    for row in read_jsonl(run / "data" / "candidates.jsonl"):
        for c in row["candidates"]:
            if c["kept"]:
                assert c["gold_rank_alone"] is not None
                assert row["gold_rank"] is None or (c["gold_rank"] or 10**9) <= row["gold_rank"]

    _ok(runner.invoke(app, ["rewrite", "sft", "--config", str(config)]))
    sft = json.loads((run / "sft" / "stage.json").read_text())
    assert sft["metrics"]["steps"] == 4 and (run / "sft" / "adapter" / "adapter_config.json").exists()
    assert Path(sft["merged"]).is_dir()

    _ok(runner.invoke(app, ["rewrite", "feedback", "--config", str(config)]))
    records = read_jsonl(run / "feedback" / "feedback.jsonl")
    assert len(records) == 8
    for r in records:
        assert len(r["candidates"]) <= 3 + 2  # the beams, then the samples no beam gave
        assert len({c["rewrite"].lower() for c in r["candidates"]}) == len(r["candidates"])
        by_level = sorted(r["candidates"], key=lambda c: c["level"])
        assert [c["reward"] for c in by_level] == sorted((c["reward"] for c in by_level), reverse=True)
        assert all(0.0 <= c["fact_dropped"] <= 1.0 for c in r["candidates"])
    steps = json.loads((run / "steps.json").read_text())
    assert steps["feedback"]["any_candidate_hit@10"] >= steps["feedback"]["best_reward_candidate_hit@10"] - 1e-9

    usable = [r for r in records if r["usable"]]
    for loss in ("pro", "dpo"):
        result = runner.invoke(app, ["rewrite", "align", "--config", str(config), "--loss", loss])
        if not usable:  # a tiny model may tie every candidate: then alignment must say so, not crash
            assert result.exit_code == 2 and "no query with a preference" in result.output
            continue
        _ok(result)
        metrics = json.loads((run / f"align_{loss}" / "stage.json").read_text())["metrics"]
        assert metrics["steps"] == 2
        if loss == "pro":  # early stopping on validation queries: scored before step 1 and after each step
            assert [p["step"] for p in metrics["validation_curve"]] == [0, 1, 2]
            assert metrics["best_step"] in (0, 1, 2)
            assert len(read_jsonl(run / "data" / "queries_validation.jsonl")) == 6

    _ok(runner.invoke(app, ["rewrite", "eval", "--config", str(config)]))
    table = json.loads((run / "eval" / "table.json").read_text())
    expected = {"none", "rule", "sft"} | ({"sft+pro", "sft+dpo"} if usable else set())
    assert set(table) == expected
    for row in table.values():
        assert row["queries"] == 10 and 0 <= row["hit@10"] <= row["hit@50"] <= 1
        assert set(row["agent"]) >= {"overall"}
    assert table["none"]["hit@10"] == table["none"]["hit_alone@10"] and table["none"]["increment"] == 0
    assert (run / "eval" / "hitrate.png").stat().st_size > 0 and "| rule |" in (run / "eval" / "table.md").read_text()
    decoded = json.loads((run / "eval" / "rewrites.json").read_text())
    assert set(decoded) == expected - {"none"}
    assert table["sft"]["examples"][0]["rewrite"] == decoded["sft"][table["sft"]["examples"][0]["query"]]
    comparisons = json.loads((run / "eval" / "comparisons.json").read_text())
    pairs = {(c["a"], c["b"], c["metric"]) for c in comparisons}
    assert ("sft", "none", "hit@10") in pairs and ("sft", "none", "hit@50") in pairs
    assert not usable or ("sft+pro", "sft", "hit@10") in pairs
    for c in comparisons:
        assert c["low"] <= c["diff"] <= c["high"]
        assert c["diff"] == pytest.approx(table[c["a"]][c["metric"]] - table[c["b"]][c["metric"]], abs=1e-3)
    summary = json.loads((run / "eval" / "heuristic_rule" / "summary.json").read_text())
    assert summary["run"]["rewriter"] == "rule" and summary["overall"]["n"] == 12

    # A partial rerun (one rewriter retrained) replaces its row and keeps the others and their comparisons.
    _ok(runner.invoke(app, ["rewrite", "eval", "--config", str(config), "--only", "rule"]))
    rerun = json.loads((run / "eval" / "table.json").read_text())
    assert list(rerun) == list(table) and rerun["sft"] == table["sft"]
    assert json.loads((run / "eval" / "rewrites.json").read_text()) == decoded
    assert rerun["rule"]["hit@10"] == table["rule"]["hit@10"]
    assert {(c["a"], c["b"], c["metric"]) for c in json.loads((run / "eval" / "comparisons.json").read_text())} == pairs

    out = _ok(runner.invoke(app, ["rewrite", "query", "i need a cover for my phone", "--rewriter", str(run / "sft"),
                                  "-n", "2", "--data-dir", str(small_sandbox)])).output
    assert '"query": "i need a cover for my phone"' in out and "query" in out


def test_config_errors_are_reported_not_raised(small_sandbox, tiny_model, tmp_path):
    runner = CliRunner()
    bad = _config(tmp_path, small_sandbox, tiny_model, sft={"epochz": 1})
    result = runner.invoke(app, ["rewrite", "sft", "--config", str(bad)])
    assert result.exit_code == 2 and "epochz" in result.output
    missing = runner.invoke(app, ["rewrite", "build-data", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in re.sub(r"[\s│╭╮╰╯─]+", " ", missing.output)


def test_sft_stage_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    from datasets import Dataset

    from rewrite import prompt_messages
    from training.stage_config import LoraSettings, SFTStageConfig
    from training.stages import run_sft_stage

    rows = [{"prompt": prompt_messages("rewrite", query=f"i need a red scarf number {i}"),
             "completion": [{"role": "assistant", "content": "red scarf"}]} for i in range(16)]
    out = tmp_path / "sft"
    first = run_sft_stage(str(tiny_model), Dataset.from_list(rows), out, SFTStageConfig(max_steps=4, batch_size=4,
                          save_steps=2), LoraSettings(r=4, alpha=8))
    assert json.loads((first / "stage.json").read_text())["metrics"]["steps"] == 4
    assert (out / "checkpoint-4").is_dir()
    again = run_sft_stage(str(tiny_model), Dataset.from_list(rows), out, SFTStageConfig(max_steps=6, batch_size=4,
                          save_steps=2), LoraSettings(r=4, alpha=8), resume=True)
    metrics = json.loads((again / "stage.json").read_text())["metrics"]
    assert metrics["steps"] == 6 and metrics["resumed_from"].endswith("checkpoint-4")
    assert metrics["last_logged_loss"] < metrics["first_logged_loss"] or metrics["train_loss"] < 10


def test_sft_stage_warm_starts_from_an_adapter(tiny_model, tmp_path):
    """`sft.init_adapter` continues the given adapter: with a zero learning rate the second stage saves
    exactly the first stage's LoRA weights (a fresh adapter would save lora_B = 0)."""
    from datasets import Dataset
    from safetensors.torch import load_file

    from rewrite import prompt_messages
    from training.stage_config import LoraSettings, SFTStageConfig
    from training.stages import run_sft_stage

    rows = [{"prompt": prompt_messages("rewrite", query=f"i need a red scarf number {i}"),
             "completion": [{"role": "assistant", "content": "red scarf"}]} for i in range(8)]
    lora = LoraSettings(r=4, alpha=8)
    first = run_sft_stage(str(tiny_model), Dataset.from_list(rows), tmp_path / "first",
                          SFTStageConfig(max_steps=3, batch_size=4, learning_rate=5e-3), lora, merge=False)
    trained = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and float(v.abs().sum()) > 0 for k, v in trained.items())
    second = run_sft_stage(str(tiny_model), Dataset.from_list(rows), tmp_path / "second",
                           SFTStageConfig(max_steps=1, batch_size=4, learning_rate=0.0,
                                          init_adapter=str(first / "adapter")), lora, merge=False)
    continued = load_file(str(second / "adapter" / "adapter_model.safetensors"))
    assert continued.keys() == trained.keys()
    assert all(torch.equal(continued[k], trained[k]) for k in trained)
    # ... and the continued adapter is trainable: a step at a real learning rate moves it.
    third = run_sft_stage(str(tiny_model), Dataset.from_list(rows), tmp_path / "third",
                          SFTStageConfig(max_steps=1, batch_size=4, learning_rate=5e-3, warmup_ratio=0.0,
                                         init_adapter=str(first / "adapter")), lora, merge=False)
    moved = load_file(str(third / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(moved[k], trained[k]) for k in trained)
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        run_sft_stage(str(tiny_model), Dataset.from_list(rows), tmp_path / "fourth",
                      SFTStageConfig(max_steps=1, batch_size=4, init_adapter=str(tmp_path)), lora)


def test_bench_run_turns_on_the_search_rewrite_stage(small_sandbox, tmp_path):
    runner = CliRunner()
    out = tmp_path / "heuristic_rule"
    _ok(runner.invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "heuristic", "--intent",
                            "product", "--limit", "5", "--rewriter", "rule", "--out", str(out)]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["rewriter"] == "rule" and summary["overall"]["n"] == 5


def test_rewrite_query_tool_serves_the_react_agent(world):
    from agents.react import ReactAgent, ReactConfig
    from sandbox import ShoppingEnv, load_toolkits
    from tests.agents.test_react_agent import Scripted, call, gold_product_task

    task = gold_product_task(world)
    model = Scripted([call("rewrite_query", query="hi! i'm looking for a phone case under 300 pesos pls"),
                      call("rewrite_query", query=""),
                      call("find_product", q="phone case")])
    config = ReactConfig(tools=["shoppingbench", "utility", "rewrite"], toolkits={"rewrite": {"rewriter": "rule"}})
    env = ShoppingEnv(world, task, toolkits=load_toolkits(config.toolkits, world))
    env.reset()
    info = ReactAgent(model, config).run_episode(env)
    assert "- rewrite_query:" in info["messages"][0]["content"]
    observations = [m["content"] for m in info["messages"] if m["role"] in ("tool", "user")][1:]
    assert '"rewrites":["phone case"]' in observations[0]
    assert "query must not be empty" in observations[1]


def test_feedback_candidates_are_the_beams_then_new_sampled_rewrites(tiny_model):
    from rewrite import RewriteModel

    model = RewriteModel(str(tiny_model), batch_size=4, max_new_tokens=6)
    queries = ["i need a cover for my phone", "cheap wireless earbuds for running", "kids building blocks set"]
    beams = model.candidates(queries, 2)
    torch.manual_seed(0)
    both = model.candidates(queries, 2, num_samples=4, temperature=1.5)
    for b, c in zip(beams, both, strict=True):
        assert c[: len(b)] == b  # the beams come first, unchanged
        assert len({x.lower() for x in c}) == len(c)
    assert sum(map(len, both)) > sum(map(len, beams))  # sampling adds rewrites no beam gave
