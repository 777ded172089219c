"""The ReAct agent under ShoppingBench's episode rules, driven by scripted chat models.

The model is faked here on purpose: these tests check the code around it (how many turns, which
calls run, when the episode ends, the exact observation string), not a model's behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest
import ujson

from agents.llm import ChatResult
from agents.react import ReactAgent, ReactConfig
from agents.react.episode_rules import (
    SHOPLAB,
    SHOPPINGBENCH,
    resolve_episode_rules,
    tool_call_id,
    turn_observation,
)
from sandbox import ShoppingEnv, Toolkit, ToolOutput, tool
from shoplab_core.config import load_config


def calls(*pairs: tuple[str, dict[str, Any]], think: str = "next") -> str:
    """One text-format turn holding these calls, in ShoppingBench's list form."""
    body = json.dumps([{"name": name, "parameters": params} for name, params in pairs])
    return f"<think>{think}</think><tool_call>{body}</tool_call>"


def call(name: str, **params: Any) -> str:
    return calls((name, params))


def upstream_id(name: str, parameters: dict[str, Any]) -> str:
    """The rule, restated: md5 of "name\\nstr(parameters)", URL-safe base64 without =+/, first 8."""
    digest = hashlib.md5(f"{name}\n{parameters}".encode()).digest()
    text = base64.urlsafe_b64encode(digest).decode()
    return text.replace("=", "").replace("+", "").replace("/", "")[:8]


class Scripted:
    """Plays a fixed list of replies, one per model turn, and records every prompt it was shown."""

    def __init__(self, replies: list[str], default: str = "<think>waiting</think>"):
        self.replies = list(replies)
        self.default = default
        self.prompts: list[list[dict[str, Any]]] = []

    def chat(self, messages, tools=None, sampling=None) -> ChatResult:
        self.prompts.append(messages)
        text = self.replies.pop(0) if self.replies else self.default
        return ChatResult(text=text, prompt_tokens=100, completion_tokens=10, finish_reason="stop")


class Native(Scripted):
    """Structured tool calls, as an OpenAI-compatible endpoint returns them; a str reply is plain text."""

    def __init__(self, turns: list[list[tuple[str, dict[str, Any]]] | str]):
        super().__init__([])
        self.turns = list(turns)

    def chat(self, messages, tools=None, sampling=None) -> ChatResult:
        self.prompts.append(messages)
        turn = self.turns.pop(0) if self.turns else ""
        if isinstance(turn, str):
            return ChatResult(text=turn)
        return ChatResult(text="", tool_calls=[
            {"id": f"api_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in enumerate(turn)])


class EchoTools(Toolkit):
    group = "echo"

    @tool("read")
    def echo(self, text: str) -> ToolOutput:
        """Repeat text with a URL and an accented word."""
        return ToolOutput(f"echo: {text}", {"text": text, "url": "https://a.b/c", "word": "café", "none": None})


def product_task(world):
    return next(t for t in world.tasks.values() if t.intent.value == "product")


def run(world, model, rules: str = "shoppingbench", tool_format: str = "text", env: ShoppingEnv | None = None,
        **config: Any) -> tuple[ShoppingEnv, dict[str, Any]]:
    # A generous environment cap: these tests are about the agent's limits, not the sandbox's.
    env = env or ShoppingEnv(world, product_task(world), max_steps=1000)
    info = ReactAgent(model, ReactConfig(episode_rules=rules, **config), tool_format=tool_format).run_episode(env)
    return env, info


def expected_obs(env: ShoppingEnv, steps: list[Any]) -> str:
    """What upstream shows for a turn: the steps' results in one ujson list inside <obs>."""
    return "<obs>" + ujson.dumps([{"tool_call_id": upstream_id(s.tool, s.arguments), "results": s.data}
                                  for s in steps]) + "</obs>"


# -- the rules as data --------------------------------------------------------------


def test_tool_call_id_follows_upstreams_rule():
    params = {"q": "red shoes", "page": 1}
    assert tool_call_id("find_product", params) == upstream_id("find_product", params) == "blv6jhE6"
    # str() of the dict, so key order matters, as it does upstream.
    assert tool_call_id("find_product", {"page": 1, "q": "red shoes"}) == "jAep2fg2"
    for name, p in [("terminate", {}), ("recommend_product", {"product_ids": "a,b"}), ("x", {"k": [1, None]})]:
        assert tool_call_id(name, p) == upstream_id(name, p)


def test_turn_observation_is_upstreams_ujson_list():
    results = [("abc", {"url": "a/b", "name": "café", "x": None}), ("d", None), ("e", []), ("f", "done")]
    text = turn_observation([(i, ujson.dumps(r)) for i, r in results])
    assert text == ('<obs>[{"tool_call_id":"abc","results":{"url":"a\\/b","name":"caf\\u00e9","x":null}},'
                    '{"tool_call_id":"d","results":null},{"tool_call_id":"e","results":[]},'
                    '{"tool_call_id":"f","results":"done"}]</obs>')
    assert text == "<obs>" + ujson.dumps([{"tool_call_id": i, "results": r} for i, r in results]) + "</obs>"


def test_auto_follows_the_environments_profile(world):
    assert resolve_episode_rules("auto", SimpleNamespace(profile="shoppingbench")) is SHOPPINGBENCH
    assert resolve_episode_rules("auto", SimpleNamespace(profile="shoplab")) is SHOPLAB
    assert resolve_episode_rules("auto", SimpleNamespace()) is SHOPLAB  # an environment without profiles
    assert resolve_episode_rules("auto", ShoppingEnv(world, product_task(world))) is SHOPLAB
    assert resolve_episode_rules("auto", None) is SHOPLAB
    assert resolve_episode_rules("shoppingbench", SimpleNamespace(profile="shoplab")) is SHOPPINGBENCH
    assert resolve_episode_rules("shoplab", SimpleNamespace(profile="shoppingbench")) is SHOPLAB
    with pytest.raises(ValueError, match="profile"):
        resolve_episode_rules("auto", SimpleNamespace(profile="webshop"))


def test_auto_runs_shoppingbenchs_rules_in_a_shoppingbench_episode(world):
    gold = product_task(world).reward[0].product_id
    env = ShoppingEnv(world, product_task(world), profile="shoppingbench")
    model = Scripted([calls(("find_product", {"q": "shoes"}), ("recommend_product", {"product_ids": gold})),
                      "<response>Here you are.</response>", call("terminate", status="success")])
    info = ReactAgent(model, ReactConfig()).run_episode(env)
    assert info["episode_rules"] == "shoppingbench" and info["finish"] == "terminate" and info["llm_turns"] == 3
    # The sandbox's own upstream serialisation of each call is what goes into the <obs> list.
    tools = [m for m in info["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tools] == [s.observation for s in env.state.history]
    assert model.prompts[1][-1]["content"] == expected_obs(env, env.state.history[:2])


def test_the_setting_is_one_config_key_and_is_checked(tmp_path):
    assert ReactConfig().episode_rules == "auto"
    path = tmp_path / "agent.yaml"
    path.write_text("agent:\n  episode_rules: shoppingbench\n")
    assert load_config(ReactConfig, path, "agent").episode_rules == "shoppingbench"
    assert load_config(ReactConfig, path, "agent", overrides=["episode_rules=shoplab"]).episode_rules == "shoplab"
    with pytest.raises(ValueError, match="episode_rules"):
        ReactConfig(episode_rules="upstream")


# -- turns and calls ----------------------------------------------------------------


def test_several_calls_in_one_turn_all_run_and_count_as_one_turn(world):
    queries = ["shoes", "bag", "phone", "watch", "lamp", "desk", "cup"]  # more than shoplab's 5 per turn
    model = Scripted([calls(*[("find_product", {"q": q}) for q in queries]), ""])
    env, info = run(world, model)
    assert [s.arguments["q"] for s in env.state.history] == queries
    assert info["llm_turns"] == 2 and env.state.steps == len(queries)
    tool_messages = [m for m in info["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [upstream_id("find_product", {"q": q}) for q in queries]
    # One observation for the whole turn, in call order.
    assert model.prompts[1][-1] == {"role": "user", "content": expected_obs(env, env.state.history)}


def test_the_31st_turn_never_happens(world):
    model = Scripted([calls(("find_product", {"q": "shoes"}), ("find_product", {"q": "bag"}))] * 40)
    env, info = run(world, model)
    assert info["llm_turns"] == 30 and len(model.prompts) == 30
    assert env.state.steps == 60  # two calls a turn: the 30 limits turns, not calls
    assert info["finish"] == "step_limit"


def test_max_steps_is_the_turn_limit(world):
    env, info = run(world, Scripted([call("find_product", q="shoes")] * 10), max_steps=4)
    assert info["llm_turns"] == 4 and env.state.steps == 4 and info["finish"] == "step_limit"


@pytest.mark.parametrize("turn", [
    "",
    "Sure! I would love to help you shop today.",
    '<tool_call>[{"name": "find_product", "parameters": {"q": "shoes"</tool_call>',  # broken and no think
    "<tool_call>[]</tool_call>",
])
def test_an_unparseable_or_empty_turn_ends_the_episode(world, turn):
    model = Scripted([call("find_product", q="shoes"), turn, call("terminate", status="success")])
    env, info = run(world, model)
    assert info["llm_turns"] == 2 and info["finish"] == "empty_turn"
    assert env.state.steps == 1 and model.replies  # terminate was never asked for


def test_a_think_with_broken_json_does_not_end_the_episode(world):
    gold = product_task(world).reward[0].product_id
    broken = '<think>search</think><tool_call>[{"name": "find_product", "parameters": {"q": </tool_call>'
    model = Scripted([broken, call("recommend_product", product_ids=gold), call("terminate", status="success")])
    env, info = run(world, model)
    assert info["llm_turns"] == 3 and info["finish"] == "terminate" and env.state.recommended == [gold]
    # Nothing ran and nothing came back: no observation, no correction, the model just goes on.
    assert model.prompts[1][-1]["role"] == "assistant" and model.prompts[1][-1]["content"] == broken
    assert not any("Error" in str(m.get("content")) for m in model.prompts[1])


def test_a_response_without_calls_does_not_end_the_episode(world):
    model = Scripted(["<think>ok</think><response>Here are some shoes.</response>", call("terminate", status="success")])
    env, info = run(world, model)
    assert info["llm_turns"] == 2 and info["finish"] == "terminate"


def test_no_recommendation_is_forced(world):
    # The model searches, never recommends, then stops: the answer is empty, nothing is asked again.
    model = Scripted([call("find_product", q="shoes"), "", call("recommend_product", product_ids="x")])
    env, info = run(world, model)
    assert env.state.recommended == [] and info["final_recommendation"] is None
    assert info["llm_turns"] == 2 and len(model.prompts) == 2
    assert not any(t.get("final") for t in info["turns"])


def test_terminate_before_any_recommendation_ends_the_episode(world):
    model = Scripted([call("terminate", status="failure"), call("recommend_product", product_ids="x")])
    env, info = run(world, model)
    assert info["finish"] == "terminate" and info["llm_turns"] == 1 and env.state.recommended == []
    assert env.state.terminate_status == "failure"


def test_every_call_of_the_terminating_turn_runs(world):
    gold = product_task(world).reward[0].product_id
    model = Scripted([calls(("recommend_product", {"product_ids": gold}), ("terminate", {"status": "success"}))])
    env, info = run(world, model)
    assert info["finish"] == "terminate" and env.state.recommended == [gold]
    assert [s.tool for s in env.state.history] == ["recommend_product", "terminate"]


# -- observations ---------------------------------------------------------------------


def test_the_observation_the_model_sees_is_exactly_upstreams(world):
    toolkit = EchoTools()
    env = ShoppingEnv(world, product_task(world), toolkits=[toolkit], max_steps=1000)
    model = Scripted([calls(("echo", {"text": "hi/there"}), ("view_product_information", {"product_ids": "no-such"}),
                            ("find_product", {"q": "shoes"})), ""])
    env, info = run(world, model, env=env, tools=["shoppingbench", "echo"])
    echo_id = upstream_id("echo", {"text": "hi/there"})
    assert echo_id == tool_call_id("echo", {"text": "hi/there"})
    obs = model.prompts[1][-1]
    assert obs["role"] == "user" and obs["content"] == expected_obs(env, env.state.history)
    # The literal start: compact, `\/`, `\u00e9`, `null`, in call order.
    assert obs["content"].startswith(
        '<obs>[{"tool_call_id":"' + echo_id + '","results":{"text":"hi\\/there","url":"https:\\/\\/a.b\\/c",'
        '"word":"caf\\u00e9","none":null}},{"tool_call_id":"'
        + upstream_id("view_product_information", {"product_ids": "no-such"}) + '","results":')
    # No shortening under these rules: every observation stays whole, however old.
    assert "more characters]" not in json.dumps(model.prompts)


def test_older_observations_stay_whole(world):
    model = Scripted([call("find_product", q=q) for q in ("shoes", "bag", "phone", "watch")] + [""])
    env, info = run(world, model, keep_full_observations=1, old_observation_chars=50)
    shown = [m["content"] for m in model.prompts[-1] if m["role"] == "user" and m["content"].startswith("<obs>")]
    assert shown == [expected_obs(env, [s]) for s in env.state.history]


def test_unknown_tools_are_skipped_silently(world):
    model = Scripted([calls(("rm_rf", {"path": "/"}), ("find_product", {"q": "shoes"}), ("nope", {})),
                      call("no_such_tool"), call("terminate", status="success")])
    env, info = run(world, model)
    assert [s.tool for s in env.state.history] == ["find_product", "terminate"]
    assert model.prompts[1][-1] == {"role": "user", "content": expected_obs(env, env.state.history[:1])}
    # A turn of only unknown tools has no observation at all: the next prompt ends with the model's turn.
    assert model.prompts[2][-1]["role"] == "assistant"
    # Nothing but the model's own turns and the <obs> of calls that ran: no error, no mention of the names.
    replies = [m for m in model.prompts[-1][2:] if m["role"] != "assistant"]
    assert [m["content"] for m in replies] == [expected_obs(env, env.state.history[:1])]
    assert info["finish"] == "terminate" and info["llm_turns"] == 3


def test_the_system_prompt_states_the_rules(world):
    env = ShoppingEnv(world, product_task(world))
    sb = ReactAgent(Scripted([]), ReactConfig(episode_rules="shoppingbench")).system_prompt(env)
    ours = ReactAgent(Scripted([]), ReactConfig(episode_rules="shoplab")).system_prompt(env)
    assert "<obs>" in sb and "30 turns" in sb and "<tool_response>" not in sb
    assert "<tool_response>" in ours and "at most 30 tool calls" in ours
    assert ReactConfig().system_message(env.tool_specs()) == ours  # without an episode: shoplab's


def test_the_episode_reports_its_rules(world):
    _, sb = run(world, Scripted([""]))
    _, ours = run(world, Scripted(["<response>hi</response>"]), rules="shoplab")
    assert sb["episode_rules"] == "shoppingbench" and ours["episode_rules"] == "shoplab"


# -- the native tool-calling path ----------------------------------------------------------


def test_native_calls_follow_the_same_rules(world):
    gold = product_task(world).reward[0].product_id
    first = [("find_product", {"q": q}) for q in ("shoes", "bag", "phone", "watch", "lamp", "desk")]
    model = Native([first + [("rm_rf", {})], "Let me think.", [("recommend_product", {"product_ids": gold})],
                    "", [("terminate", {"status": "success"})]])
    env, info = run(world, model, tool_format="native")
    assert info["llm_turns"] == 4 and info["finish"] == "empty_turn" and env.state.recommended == [gold]
    assert env.state.steps == 7 and info["final_recommendation"] is None
    assistant = info["messages"][2]
    assert [c["id"] for c in assistant["tool_calls"]] == [upstream_id(n, a) for n, a in first]  # rm_rf skipped
    tools = [m for m in model.prompts[1] if m["role"] == "tool"]
    # Native tool messages carry one call's results each, serialised as upstream does.
    assert [m["tool_call_id"] for m in tools] == [c["id"] for c in assistant["tool_calls"]]
    assert [m["content"] for m in tools] == [ujson.dumps(s.data) for s in env.state.history[:6]]


def test_native_turn_limit(world):
    model = Native([[("find_product", {"q": "shoes"}), ("find_product", {"q": "bag"})]] * 40)
    env, info = run(world, model, tool_format="native")
    assert info["llm_turns"] == 30 and env.state.steps == 60 and info["finish"] == "step_limit"


# -- shoplab's rules are unchanged -------------------------------------------------------


def test_shoplab_rules_keep_the_call_limit_and_the_forced_recommendation(world):
    model = Scripted([calls(("find_product", {"q": "shoes"}), ("find_product", {"q": "bag"}))] * 40)
    env, info = run(world, model, rules="shoplab", env=ShoppingEnv(world, product_task(world)))
    assert info["episode_rules"] == "shoplab" and info["finish"] == "step_limit"
    assert env.state.steps == 30 and info["final_recommendation"] == "fallback"
    assert any(m["role"] == "tool" for m in model.prompts[1]) and "<obs>" not in json.dumps(model.prompts)
