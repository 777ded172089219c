"""Teacher runs -> the student's SFT / step-GRPO data (`training.distill.data`), from real teacher episodes.

The teacher (`make_agent("teacher")`) runs on generated tasks of the small sandbox; a second run folder
adds hand-edited copies of its rows (a longer success, a shorter failure, an invented product id) so
the rejection sampling and the unseen-id filter have something to reject.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pytest

from agents.react import ReactAgent, ReactConfig
from agents.registry import make_agent
from agents.runner import RunConfig, run_benchmark
from sandbox import TOOLS
from sandbox.task_generator import TaskGeneratorConfig, generate_tasks
from training.chat_template import use_tool_chat_template
from training.distill.data import (
    build_distill_datasets,
    prefix_consistent,
    shortest_successful,
    student_conversation,
    uses_unseen_ids,
)
from training.distill.pipeline import DISTILL_PROFILE

from .test_chat_template import tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDENT_TOOLS = ["find_product", "view_product_information", "recommend_product", "terminate"]
SPECS = [TOOLS[n] for n in STUDENT_TOOLS]
LIMIT = 600
SUFFIX = " ...[{} more characters]"


def student_config(**overrides) -> ReactConfig:
    values = {"system_prompt": "system_hermes", "tool_descriptions": "compact", "tools": list(STUDENT_TOOLS),
              "max_observation_chars": LIMIT, "old_observation_chars": LIMIT, **overrides}
    return ReactConfig(**values)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                        encoding="utf-8")


def _args(call: dict) -> dict:
    a = call["function"]["arguments"]
    return json.loads(a) if isinstance(a, str) else a


@pytest.fixture(scope="module")
def teacher_run(world, similarity, tmp_path_factory) -> Path:
    tasks = generate_tasks(world, TaskGeneratorConfig(n_product=6, n_shop=1, seed=21))
    out = tmp_path_factory.mktemp("distill") / "teacher"
    summary = run_benchmark(world, tasks, lambda: make_agent("teacher", similarity=similarity), out,
                            RunConfig(agent="teacher", profile=DISTILL_PROFILE), similarity=similarity,
                  progress=False)
    assert summary["overall"]["n"] == 7
    return out


@pytest.fixture(scope="module")
def real_rows(teacher_run) -> list[dict]:
    rows = [r for r in _rows(teacher_run / "results.jsonl") if r["success"]]
    assert len(rows) >= 5, "the teacher should solve most generated tasks"
    return rows


@pytest.fixture(scope="module")
def edited_run(teacher_run, real_rows) -> Path:
    """Rows that must not survive: a longer success, a shorter failure, a failure only, an invented id."""
    a, b, c = real_rows[0], real_rows[1], real_rows[2]
    longer = copy.deepcopy(a)
    extra = copy.deepcopy(longer["trajectory"][1:3])  # one more search (assistant + tool)
    longer["trajectory"][3:3] = extra
    longer["steps"] += 1
    failed_short = copy.deepcopy(b)
    failed_short.update(success=False, steps=1, trajectory=failed_short["trajectory"][:3])
    failed_only = copy.deepcopy(c)
    failed_only.update(task_id="product-failed-only", success=False)
    invented = copy.deepcopy(c)
    invented["task_id"] = "product-invented-id"
    for m in invented["trajectory"]:
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] == "recommend_product":
                call["function"]["arguments"] = json.dumps({"product_ids": "9999999999"})
    out = teacher_run.parent / "edited"
    _write(out, [longer, failed_short, failed_only, invented])
    return out


@pytest.fixture(scope="module")
def built(edited_run, teacher_run):
    # The edited run comes first: the shortest success must win whatever the order.
    return build_distill_datasets([edited_run, teacher_run], student_config(), SPECS, unit="episode")


def _episodes_by_task(sft: datasets.Dataset) -> dict[str, list[dict]]:
    return {r["task_id"]: r["messages"] for r in sft}


# -- rejection sampling ---------------------------------------------------------------------------------

def test_shortest_successful_keeps_one_successful_episode_per_task(edited_run, teacher_run, real_rows):
    rows, report = shortest_successful([edited_run, teacher_run])
    n_real = len(_rows(teacher_run / "results.jsonl"))
    assert report.episodes == n_real + 4
    assert report.successful == len(real_rows) + 2  # the longer copy and the invented-id copy
    by_task = {r["task_id"]: r for r in rows}
    assert len(by_task) == len(rows)
    assert all(r["success"] for r in rows)
    assert "product-failed-only" not in by_task
    for real in real_rows:
        assert by_task[real["task_id"]]["steps"] == real["steps"]
        assert by_task[real["task_id"]]["trajectory"] == real["trajectory"]


def test_report_counts_and_invented_ids_are_dropped(built, teacher_run, real_rows):
    sft, steps, report = built
    baseline = build_distill_datasets([teacher_run], student_config(), SPECS)[2]
    assert report.dropped_unseen_ids == baseline.dropped_unseen_ids + 1
    assert report.tasks_kept == baseline.tasks_kept == len(real_rows) - baseline.dropped_unseen_ids
    assert report.tasks_kept >= 4
    assert report.steps == len(steps) and len(sft) == report.tasks_kept
    kept = set(sft["task_id"])
    assert "product-invented-id" not in kept and "product-failed-only" not in kept
    assert set(steps["task_id"]) == kept
    assert "9999999999" not in json.dumps(sft.to_list()) + json.dumps(steps.to_list())


def test_unseen_ids_are_judged_on_the_shortened_observations():
    agent = ReactAgent(llm=None, config=student_config(), tool_format="native")
    hits = [{"product_id": f"{1000000000 + i}", "title": "x" * 150} for i in range(6)]
    obs = json.dumps(hits)
    assert len(obs) > LIMIT
    late = hits[-1]["product_id"]
    assert obs.index(late) > LIMIT

    def episode(pick: str) -> list[dict]:
        return [{"role": "system", "content": "sys"}, {"role": "user", "content": "Find a thing."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "find_product", "arguments": {"q": "thing"}}}]},
                {"role": "tool", "name": "find_product", "content": obs},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "recommend_product", "arguments": {"product_ids": pick}}}]}]

    assert not uses_unseen_ids(agent, episode(hits[0]["product_id"]))
    assert uses_unseen_ids(agent, episode(late))  # in the raw observation, past what the student sees
    assert uses_unseen_ids(agent, episode(f"{hits[0]['product_id']},{late}"))
    wide = ReactAgent(llm=None, config=student_config(max_observation_chars=5000, old_observation_chars=5000),
                      tool_format="native")
    assert not uses_unseen_ids(wide, episode(late))


# -- the student's conversation ---------------------------------------------------------------------------

def test_recommend_then_terminate_becomes_one_turn():
    def call(i, name, args):
        return {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}

    def obs(i, name, text):
        return {"role": "tool", "tool_call_id": f"call_{i}", "name": name, "content": text}

    trajectory = [{"role": "user", "content": "Find a 12345678 lamp."},
                  call(0, "find_product", {"q": "lamp", "price": None}), obs(0, "find_product", "[12345678]"),
                  call(1, "recommend_product", {"product_ids": "12345678"}), obs(1, "recommend_product", "ok"),
                  call(2, "terminate", {"status": "success"}), obs(2, "terminate", "bye")]
    messages = student_conversation(trajectory, "SYSTEM")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]
    assert messages[0] == {"role": "system", "content": "SYSTEM"}
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"q": "lamp"}  # None arguments left out
    last = messages[4]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in last["tool_calls"]] == [
        ("recommend_product", {"product_ids": "12345678"}), ("terminate", {"status": "success"})]
    assert [m["content"] for m in messages[5:]] == ["ok", "bye"]
    # A terminate that follows anything else stays a turn of its own.
    giving_up = trajectory[:3] + [call(1, "terminate", {"status": "failure"}), obs(1, "terminate", "bye")]
    roles = [m["role"] for m in student_conversation(giving_up, "SYSTEM")]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]


def test_episodes_end_with_one_recommend_and_terminate_turn(built, real_rows):
    sft, _, _ = built
    steps_of = {r["task_id"]: r["steps"] for r in real_rows}
    for task_id, messages in _episodes_by_task(sft).items():
        assistants = [m for m in messages if m["role"] == "assistant"]
        names = [[c["function"]["name"] for c in m["tool_calls"]] for m in assistants]
        assert names[-1] == ["recommend_product", "terminate"], names
        assert all("terminate" not in n for n in names[:-1])
        assert sum(len(n) for n in names) == steps_of[task_id]  # every teacher call, one turn fewer
        assert messages[-1]["role"] == "assistant"  # nothing after the last turn: no loss there


def test_system_prompt_is_the_students(built):
    sft, steps, _ = built
    system = sft[0]["messages"][0]
    assert system["role"] == "system" and "{tools}" not in system["content"]
    assert "- find_product(q, page?" in system["content"] and "- terminate(" in system["content"]
    assert "calculate" not in system["content"]
    assert all(r["messages"][0] == system for r in sft)
    assert all(r["prompt"][0] == system for r in steps)


def test_observations_are_shortened_as_at_inference(built, teacher_run):
    sft, _, _ = built
    raw = {r["task_id"]: [m["content"] for m in r["trajectory"] if m["role"] == "tool"]
           for r in _rows(teacher_run / "results.jsonl")}
    shortened = 0
    for task_id, messages in _episodes_by_task(sft).items():
        seen = [m["content"] for m in messages if m["role"] == "tool"]
        for got, full in zip(seen, raw[task_id], strict=False):
            want = full if len(full) <= LIMIT else full[:LIMIT] + SUFFIX.format(len(full) - LIMIT)
            assert got == want
            shortened += got != full
    assert shortened > 0  # search results are longer than 600 characters


# -- step samples and the episode/step equivalence ----------------------------------------------------------

def test_every_step_prompt_is_a_prefix_of_its_episode(built):
    sft, steps, _ = built
    assert prefix_consistent(student_config())
    episodes = _episodes_by_task(sft)
    per_task: dict[str, list[int]] = {}
    for row in steps:
        episode = episodes[row["task_id"]]
        prompt = row["prompt"]
        assert prompt == episode[:len(prompt)]
        assert row["completion"] == [episode[len(prompt)]]
        assert prompt[-1]["role"] in ("user", "tool")
        per_task.setdefault(row["task_id"], []).append(row["step"])
    for task_id, numbers in per_task.items():
        assert numbers == list(range(len(numbers)))
        assert len(numbers) == sum(m["role"] == "assistant" for m in episodes[task_id])


def test_step_prefixes_hold_for_the_rendered_chat_template(built):
    """The same equivalence at the text the model is trained on (training.chat_template)."""
    sft, steps, _ = built
    tokenizer = use_tool_chat_template(tiny_tokenizer())
    episodes = {r["task_id"]: tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in sft}
    for row in steps:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        assert full.startswith(prompt)
        assert episodes[row["task_id"]].startswith(full)


def test_reference_is_the_completions_tool_calls(built):
    _, steps, _ = built
    assert len(steps) > 0
    for row in steps:
        reference = json.loads(row["reference"])
        calls = row["completion"][0]["tool_calls"]
        assert reference == [{"type": "function", "function": {"name": c["function"]["name"], "arguments": _args(c)}}
                             for c in calls]
        assert all(isinstance(r["function"]["arguments"], dict) for r in reference)


def test_episode_unit_needs_prefix_consistent_observations(teacher_run):
    shrinking = student_config(old_observation_chars=300)
    assert not prefix_consistent(shrinking)
    with pytest.raises(ValueError, match="old_observation_chars"):
        build_distill_datasets([teacher_run], shrinking, SPECS, unit="episode")
    with pytest.raises(ValueError, match="unit"):
        build_distill_datasets([teacher_run], student_config(), SPECS, unit="turn")
    sft, steps, _ = build_distill_datasets([teacher_run], shrinking, SPECS, unit="step")
    assert sft.column_names == ["prompt", "completion"] and len(sft) == len(steps)
    # Older observations shrink to 300 characters, the two latest keep 600: prompts are no longer prefixes.
    longest = max(len(m["content"]) for r in steps for m in r["prompt"] if m["role"] == "tool")
    assert longest <= LIMIT + len(SUFFIX.format(10**6))
    old = [c for r in steps for c in [m["content"] for m in r["prompt"] if m["role"] == "tool"][:-2]]
    assert old and all(len(c) <= 300 + len(SUFFIX.format(10**6)) for c in old)


def test_datasets_round_trip_through_disk(built, tmp_path):
    sft, steps, _ = built
    for name, ds in (("sft", sft), ("steps", steps)):
        ds.save_to_disk(str(tmp_path / name))
        again = datasets.load_from_disk(str(tmp_path / name))
        assert again.column_names == ds.column_names
        assert again.to_list() == ds.to_list()
    assert set(steps.column_names) == {"task_id", "intent", "recovery", "prompt", "completion", "step", "reference"}
    assert set(sft.column_names) == {"task_id", "intent", "recovery", "messages"}


def test_a_turn_without_calls_before_terminate_does_not_break_the_merge():
    """LLM-agent runs have turns with no call (a format error) followed by a user nudge."""
    from training.distill.data import student_conversation

    trajectory = [{"role": "user", "content": "find a wheel"},
                  {"role": "assistant", "content": "hmm", "tool_calls": None},
                  {"role": "user", "content": "Error: no <tool_call> block"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"function": {"name": "terminate", "arguments": "{}"}}]},
                  {"role": "tool", "name": "terminate", "content": "ended"}]
    out = student_conversation(trajectory, "SYS")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert out[-2]["tool_calls"][0]["function"]["name"] == "terminate"
