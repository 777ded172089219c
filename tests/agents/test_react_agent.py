"""The LangGraph ReAct agent driven by scripted chat models (this tests the graph, not an LLM)."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import datasets
import pytest

from agents.llm import BatchingChat, ChatResult, LLMConfig, SamplingConfig
from agents.react import ReactAgent, ReactConfig
from agents.runner import RunConfig, run_benchmark
from sandbox import ShoppingEnv, Toolkit, tool


def call(name: str, **params: Any) -> str:
    return f"<think>next</think><tool_call>[{json.dumps({'name': name, 'parameters': params})}]</tool_call>"


class Scripted:
    """Plays a fixed list of replies, one per model turn, and records every prompt it was shown."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.prompts: list[list[dict[str, Any]]] = []

    def chat(self, messages, tools=None, sampling=None) -> ChatResult:
        self.prompts.append(messages)
        text = self.replies.pop(0) if self.replies else "<response>I am done.</response>"
        return ChatResult(text=text, prompt_tokens=100, completion_tokens=10, finish_reason="stop")


def gold_product_task(world):
    return next(t for t in world.tasks.values() if t.intent.value == "product")


def run(world, task, model, toolkits=(), **config) -> tuple[ShoppingEnv, dict[str, Any]]:
    env = ShoppingEnv(world, task, toolkits=toolkits)
    env.reset()
    info = ReactAgent(model, ReactConfig(**config)).run_episode(env)
    return env, info


def test_success_records_a_trajectory_that_loads_as_chat_messages(world, similarity):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    model = Scripted([call("find_product", q=task.reward[0].title[:60]), call("view_product_information",
                      product_ids=gold), call("recommend_product", product_ids=gold),
                      call("terminate", status="success")])
    env, info = run(world, task, model)
    assert env.score(similarity).success
    assert info["finish"] == "terminate" and info["llm_turns"] == 4 and info["format_errors"] == 0
    assert info["prompt_tokens"] == 400 and info["completion_tokens"] == 40
    assert info["final_recommendation"] is None
    msgs = info["messages"]
    assert [m["role"] for m in msgs[:4]] == ["system", "user", "assistant", "tool"]
    assert "find_product" in msgs[0]["content"] and msgs[1]["content"] == task.query
    assert msgs[2]["tool_calls"][0]["function"]["name"] == "find_product"
    assert msgs[3]["tool_call_id"] == msgs[2]["tool_calls"][0]["id"]
    # Ready for SFT: HF datasets stores it as chat messages with tool calls.
    ds = datasets.Dataset.from_list([{"messages": msgs}])
    assert ds[0]["messages"][2]["tool_calls"][0]["function"]["name"] == "find_product"
    # The model saw its own earlier observation in the next prompt.
    assert any(m["role"] == "tool" and gold in m["content"] for m in model.prompts[2])


@pytest.mark.parametrize("bad, expected", [
    ('<tool_call>[{"name": "find_product", "parameters": {"q": "shoes"</tool_call>', "could not parse"),
    ("<tool_call>[]</tool_call>", "no <tool_call>"),
    ('<tool_call>[{"parameters": {"q": "x"}}]</tool_call>', "no 'name'"),
    ('<tool_call>[{"name": "rm_rf", "parameters": {}}]</tool_call>', "unknown tool"),
    (call("find_product", q="shoes", page=99), "invalid arguments"),
    (call("view_product_information", product_ids="no-such-id"), "no such product"),
    ("Sure! I would love to help you shop today.", "no <tool_call> block"),
    ("<tool_call>" + "[" * 5000 + "</tool_call>", "could not parse"),
])
def test_malformed_calls_become_errors_the_model_sees(world, similarity, bad, expected):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    model = Scripted([bad, call("recommend_product", product_ids=gold), call("terminate")])
    env, info = run(world, task, model)
    seen = json.dumps(model.prompts[1])
    assert expected in seen, seen[-600:]
    assert env.score(similarity).success, "the episode must go on after a bad call"


def test_hermes_style_single_object_with_arguments_is_accepted(world, similarity):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    hermes = "<tool_call>\n" + json.dumps({"name": "recommend_product", "arguments": {"product_ids": gold}}) \
        + "\n</tool_call>"
    env, info = run(world, task, Scripted([hermes, call("terminate")]))
    assert env.state.recommended == [gold] and info["format_errors"] == 0


def test_step_limit_stops_the_loop_and_still_recommends(world):
    task = gold_product_task(world)
    model = Scripted([call("find_product", q="shoes")] * 50)
    env, info = run(world, task, model, max_steps=5)
    assert info["finish"] == "step_limit"
    assert env.state.steps == 5 and info["llm_turns"] == 5
    # The model was asked for a final recommendation, gave none, so the top search hit was used.
    assert info["final_recommendation"] == "fallback" and len(env.state.recommended) == 1
    final_request = model.prompts[-1][-1]["content"]
    assert "recommend_product" in final_request and env.state.recommended[0] in final_request


def test_final_recommendation_comes_from_the_model_when_it_answers(world, similarity):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    model = Scripted(["<response>Here you go.</response>", call("recommend_product", product_ids=gold)])
    env, info = run(world, task, model)
    assert info["finish"] == "response" and info["final_recommendation"] == "model"
    assert env.score(similarity).success


def test_terminate_before_recommend_is_refused_and_the_episode_goes_on(world, similarity):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    model = Scripted([call("terminate"), call("recommend_product", product_ids=gold), call("terminate")])
    env, info = run(world, task, model)
    assert "before terminate" in json.dumps(model.prompts[1])
    assert info["finish"] == "terminate" and env.score(similarity).success


def test_consecutive_unusable_turns_end_the_episode(world):
    model = Scripted(["hello"] * 10)
    env, info = run(world, gold_product_task(world), model, max_format_errors=3)
    assert info["finish"] == "format_errors" and info["llm_turns"] == 4  # 3 turns + the final request
    assert env.state.recommended == [] and info["final_recommendation"] == "none"


def test_llm_failure_ends_the_episode_without_a_crash(world):
    class Failing(Scripted):
        def chat(self, messages, tools=None, sampling=None):
            return ChatResult(text="", error="HTTP 503 from server")

    env, info = run(world, gold_product_task(world), Failing([]))
    assert info["finish"] == "llm_error" and info["turns"][0]["error"] == "HTTP 503 from server"


def test_native_tool_calls_and_tools_passed_to_the_model(world, similarity):
    task = gold_product_task(world)
    gold = task.reward[0].product_id

    class Native:
        def __init__(self):
            self.tools_seen = None
            self.n = 0

        def chat(self, messages, tools=None, sampling=None):
            self.tools_seen = tools
            self.n += 1
            name, args = ("recommend_product", {"product_ids": gold}) if self.n == 1 else ("terminate", {})
            return ChatResult(text="", tool_calls=[{"id": f"c{self.n}", "type": "function", "function": {
                "name": name, "arguments": json.dumps(args)}}])

    model = Native()
    env = ShoppingEnv(world, task)
    info = ReactAgent(model, tool_format="native").run_episode(env)
    assert env.score(similarity).success and info["messages"][3]["tool_call_id"] == "c1"
    assert [t["function"]["name"] for t in model.tools_seen] == ["find_product", "view_product_information",
                                                                 "recommend_product", "terminate", "calculate"]


def test_plugin_toolkits_reach_the_agent_through_the_environment(world):
    class EchoTools(Toolkit):
        group = "echo"

        @tool("read")
        def echo(self, env: ShoppingEnv, text: str) -> str:
            """Repeat text."""
            return f"echo: {text} ({len(env.world.tasks)} tasks)"

    model = Scripted([call("echo", text="hi")])
    env, info = run(world, gold_product_task(world), model, toolkits=[EchoTools()],
                    tools=["shoppingbench", "echo"])
    assert "- echo: Repeat text." in info["messages"][0]["content"]
    assert info["messages"][3]["content"].startswith("echo: hi")
    # The agent narrows the environment to its configured tools: calculate is not offered here.
    assert "calculate" not in info["messages"][0]["content"] and "calculate" not in env.tool_names
    with pytest.raises(ValueError, match="unknown tools"):
        run(world, gold_product_task(world), Scripted([]), tools=["shoppingbench", "echo"])


def test_prompts_come_from_files_and_can_be_overridden(world, tmp_path):
    (tmp_path / "system_text.md").write_text("CUSTOM PROMPT with {max_steps} steps.\n{tools}")
    env, info = run(world, gold_product_task(world), Scripted([]), prompt_dir=str(tmp_path), max_steps=7)
    assert info["messages"][0]["content"].startswith("CUSTOM PROMPT with 7 steps.")


def test_older_observations_are_shortened_in_the_prompt(world):
    model = Scripted([call("find_product", q=q) for q in ("shoes", "bag", "phone", "watch")])
    run(world, gold_product_task(world), model, keep_full_observations=1, old_observation_chars=50)
    last = [m for m in model.prompts[-1] if m["role"] == "tool"]
    assert all("more characters]" in m["content"] for m in last[:-1])
    assert len(last[-1]["content"]) > 200


class ScriptedBackend:
    """A ChatLLM whose batches are recorded: each conversation gets the recommendation for its own task."""

    name = "scripted"
    thread_safe = False

    def __init__(self, golds: dict[str, str]):
        self.golds = golds
        self.config = LLMConfig(max_batch_size=8)
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()
        self.active = 0

    def chat_batch(self, conversations, tools, sampling: SamplingConfig):
        with self.lock:
            self.active += 1
            assert self.active == 1, "the batcher must never run two batches at once"
        self.batch_sizes.append(len(conversations))
        out = []
        for conv in conversations:
            gold = self.golds[conv[1]["content"]]
            done = any(m["role"] == "tool" and "recommended" in m["content"].lower() for m in conv)
            out.append(ChatResult(text=call("terminate") if done else call("recommend_product", product_ids=gold)))
        with self.lock:
            self.active -= 1
        return out

    def close(self):
        pass


def test_parallel_episodes_are_isolated_and_batched(world, similarity, tmp_path):
    tasks = [t for t in world.tasks.values() if t.intent.value == "product"][:12]
    backend = ScriptedBackend({t.query: t.reward[0].product_id for t in tasks})
    llm = BatchingChat(backend, gather_ms=200)
    llm.expect_clients(6)
    summary = run_benchmark(world, tasks, lambda: ReactAgent(llm), tmp_path / "run",
                            RunConfig(agent="react", parallel=6, profile="shoplab"), similarity=similarity,
                            progress=False)
    assert summary["overall"]["asr"] == 1.0
    assert summary["overall"]["mean_llm_turns"] == 2.0 and summary["overall"]["format_error_rate"] == 0.0
    assert max(backend.batch_sizes) > 1, backend.batch_sizes
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        task = world.tasks[row["task_id"]]
        assert row["recommended"] == [task.reward[0].product_id]
        assert row["trajectory"][1]["content"] == task.query  # no episode saw another's conversation


def test_batcher_hands_backend_failures_to_every_waiting_episode():
    class Broken(ScriptedBackend):
        def chat_batch(self, conversations, tools, sampling):
            raise RuntimeError("engine died")

    llm = BatchingChat(Broken({}))
    with pytest.raises(RuntimeError, match="engine died"):
        llm.chat([{"role": "user", "content": "x"}])
    # The dispatcher survives and serves the next request.
    with pytest.raises(RuntimeError, match="engine died"):
        llm.chat([{"role": "user", "content": "y"}])
    llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        llm.chat([{"role": "user", "content": "z"}])


def test_no_model_output_is_ever_executed(world):
    payload = "<tool_call>[{'name': 'calculate', 'parameters': {'expression': '__import__(\"os\").getcwd()'}}]</tool_call>"
    model = Scripted([payload])
    run(world, gold_product_task(world), model)
    obs = json.dumps(model.prompts[1])
    assert re.search(r"Error", obs) and "/work" not in obs


def test_run_trajectories_load_as_one_sft_dataset(world, similarity, tmp_path):
    from agents.scripted import HeuristicAgent
    from agents.trajectories import load_trajectories

    tasks = [t for t in world.tasks.values() if t.intent.value == "product"][:3]
    backend = ScriptedBackend({t.query: t.reward[0].product_id for t in tasks})
    llm = BatchingChat(backend)
    run_benchmark(world, tasks, lambda: ReactAgent(llm), tmp_path / "react", RunConfig(agent="react"),
                  similarity=similarity, progress=False)
    run_benchmark(world, tasks, HeuristicAgent, tmp_path / "heur", RunConfig(agent="heuristic"),
                  similarity=similarity, progress=False)
    ds = load_trajectories([tmp_path / "react", tmp_path / "heur"])
    assert len(ds) == 6 and set(ds["agent"]) == {"react", "heuristic"}
    react = ds.filter(lambda r: r["agent"] == "react")
    assert all(react["success"]) and react[0]["messages"][0]["role"] == "system"
    call = react[0]["messages"][2]["tool_calls"][0]["function"]
    assert call["name"] == "recommend_product" and json.loads(call["arguments"])["product_ids"]
    ok = load_trajectories([tmp_path / "react", tmp_path / "heur"], successful_only=True)
    assert len(ok) == 3 + sum(1 for r in ds if r["agent"] == "heuristic" and r["success"])


def test_stream_episode_yields_each_message_as_it_happens_then_the_episode_info(world):
    task = gold_product_task(world)
    gold = task.reward[0].product_id
    replies = [call("find_product", q=task.reward[0].title[:60]), "no call here",
               call("recommend_product", product_ids=gold), call("terminate", status="success")]
    env = ShoppingEnv(world, task)
    history = [{"role": "user", "content": "earlier question"}, {"role": "assistant", "content": "earlier answer"}]
    model = Scripted(list(replies))
    events = list(ReactAgent(model, ReactConfig()).stream_episode(env, history))
    kinds = [e["event"] for e in events]
    assert kinds == ["assistant", "tool", "assistant", "user", "assistant", "tool", "assistant", "tool", "done"]
    assert events[0]["tool_calls"][0]["function"]["name"] == "find_product"
    assert events[1]["name"] == "find_product" and events[1]["tool_call_id"] == events[0]["tool_calls"][0]["id"]
    assert "no <tool_call> block" in events[3]["content"]
    info = events[-1]["info"]
    assert info["finish"] == "terminate" and info["llm_turns"] == 4 and env.state.recommended == [gold]
    # The earlier turns sit between the system prompt and this request.
    assert [m["content"] for m in model.prompts[0][1:4]] == ["earlier question", "earlier answer", task.query]
    # run_episode is the same stream, consumed.
    again = ReactAgent(Scripted(list(replies)), ReactConfig()).run_episode(ShoppingEnv(world, task))
    assert {k: v for k, v in again.items() if "seconds" not in k} == \
        {k: v for k, v in info.items() if "seconds" not in k} | {"messages": again["messages"]}
    assert len(again["messages"]) == len(info["messages"]) - 2


def test_a_backend_error_is_streamed_before_the_episode_ends(world):
    class Failing(Scripted):
        def chat(self, messages, tools=None, sampling=None):
            return ChatResult(text="", error="connection refused")

    events = list(ReactAgent(Failing([]), ReactConfig()).stream_episode(ShoppingEnv(world, gold_product_task(world))))
    assert [e["event"] for e in events] == ["llm_error", "done"]
    assert events[0]["error"] == "connection refused" and events[-1]["info"]["finish"] == "llm_error"
