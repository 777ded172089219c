r"""A LangGraph ReAct shopping agent: model node <-> tool node over the sandbox tools.

    START -> agent --(tool calls or a malformed turn)--> tools --(go on)--> agent
                  \--(response / limit / error)------> finalize -> END
             tools --(terminate / step limit)--------> finalize

The episode follows one of two rule sets (agents.react.episode_rules), chosen by
`ReactConfig.episode_rules` (`auto`: the environment's profile). Under `shoppingbench`'s, the loop is
upstream's: 30 model turns of any number of calls, `<obs>` lists, no corrections, nothing forced.
Under `shoplab`'s, `finalize` guarantees a `recommend_product`: when the model stops without one, it
is asked once more for just that call; if it still gives none, the top result of its last search is
recommended and the episode is marked so (`final_recommendation: fallback`), so the two are never
confused.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from agents.llm.base import ChatResult, Message, SamplingConfig
from agents.react.config import ReactConfig
from agents.react.episode_rules import EpisodeRules, observations_as_upstream, results_json, tool_call_id
from agents.react.parsing import ParsedTurn, ToolCall, parse_native_turn, parse_text_turn
from sandbox import ErrorKind, ShoppingEnv


class ChatClient(Protocol):
    """What the agent needs of a model: `BatchingChat`, or a scripted model in unit tests."""

    def chat(self, messages: list[Message], tools: list[dict[str, Any]] | None = None,
             sampling: SamplingConfig | None = None) -> ChatResult:
        ...


class ReactState(TypedDict, total=False):
    messages: Annotated[list[Message], operator.add]
    turns: Annotated[list[dict[str, Any]], operator.add]
    pending: list[dict[str, Any]]
    pending_errors: list[str]
    format_errors: int
    tool_errors: dict[str, str]  # call id -> ErrorKind of this round's failed calls (for UIs, not the model)
    finish: str
    final_recommendation: str | None


def shorten_observation(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" ...[{len(text) - limit} more characters]"


class ReactAgent:
    """Runs one episode per `run_episode(env)`; safe to share across threads (state lives in the graph)."""

    def __init__(self, llm: ChatClient, config: ReactConfig | None = None, tool_format: str = "text",
                 sampling: SamplingConfig | None = None, name: str = "react"):
        self.llm = llm
        self.config = config or ReactConfig()
        self.tool_format = tool_format
        self.sampling = sampling or getattr(getattr(llm, "config", None), "sampling", None) or SamplingConfig()
        if tool_format == "text":
            stops = ["</tool_call>", "</response>"]
            self.sampling = SamplingConfig(**{**self.sampling.__dict__,
                                              "stop": sorted(set(self.sampling.stop) | set(stops))})
        self.name = name
        self.graph = self._build()

    # -- prompt -------------------------------------------------------------------
    def system_prompt(self, env: ShoppingEnv) -> str:
        return self.config.system_message(env.tool_specs(), self.tool_format, self.config.rules_for(env))

    def prompt_messages(self, messages: list[Message], rules: EpisodeRules | None = None) -> list[Message]:
        """The conversation as the model sees it. shoplab's rules: recent observations whole, older ones
        shortened; shoppingbench's: upstream's `<obs>` per turn, whole. `rules` default to `rules_for()`."""
        rules = rules or self.config.rules_for()
        if rules.upstream_observations:
            return observations_as_upstream(messages, self.tool_format)
        tool_idx = [i for i, m in enumerate(messages) if m["role"] == "tool"]
        keep = set(tool_idx[-self.config.keep_full_observations:]) if self.config.keep_full_observations else set()
        out = []
        for i, m in enumerate(messages):
            if m["role"] == "tool":
                limit = self.config.max_observation_chars if i in keep else self.config.old_observation_chars
                m = {**m, "content": shorten_observation(m["content"], limit)}
            out.append(m)
        return out

    # -- nodes --------------------------------------------------------------------
    def _call_model(self, messages: list[Message], env: ShoppingEnv, turn_no: int,
                    rules: EpisodeRules) -> tuple[ChatResult, ParsedTurn, dict[str, Any]]:
        """One model turn: the reply, its parsed calls, and the turn's record (tokens, latency, format)."""
        tools = env.openai_tools() if self.tool_format == "native" else None
        started = time.perf_counter()
        result = self.llm.chat(self.prompt_messages(messages, rules), tools, self.sampling)
        waited = time.perf_counter() - started
        text = result.text or ""
        if self.tool_format == "text" and "<tool_call>" in text and "</tool_call>" not in text \
                and result.finish_reason == "stop":
            text += "</tool_call>"  # generation stopped on the closing tag, which is not returned
        if self.tool_format == "text" and "<response>" in text and "</response>" not in text:
            text += "</response>"
        result.text = text
        limit = rules.max_calls_per_turn
        parsed = (parse_native_turn(text, result.tool_calls, limit) if self.tool_format == "native"
                  else parse_text_turn(text, limit))
        record = {"turn": turn_no, "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                  "cached_prompt_tokens": result.cached_prompt_tokens, "latency_s": round(waited, 3),
                  "format_ok": parsed.format_ok, "n_calls": len(parsed.calls)}
        if result.error:
            record["error"] = result.error
        return result, parsed, record

    def _agent_node(self, state: ReactState, config: RunnableConfig) -> dict[str, Any]:
        env: ShoppingEnv = config["configurable"]["env"]
        rules = self._rules(config)
        turn_no = len(state.get("turns", []))
        result, parsed, record = self._call_model(state["messages"], env, turn_no, rules)
        if result.error:
            return {"turns": [record], "finish": "llm_error", "pending": [], "pending_errors": []}
        calls = parsed.calls
        if rules.upstream_observations:
            calls = [c for c in calls if c.name in env.tool_names]  # other names are skipped without a word
            if len(calls) < len(parsed.calls):
                record["skipped_calls"] = len(parsed.calls) - len(calls)
            for call in calls:
                call.id = tool_call_id(call.name, call.arguments)
        else:
            for k, call in enumerate(calls):
                call.id = call.id or f"call_{turn_no}_{k}"
        assistant: Message = {"role": "assistant", "content": result.text}
        if calls:
            assistant["tool_calls"] = [c.openai() for c in calls]
        update: dict[str, Any] = {"messages": [assistant], "turns": [record], "pending": [c.__dict__ for c in calls],
                                  "pending_errors": parsed.errors if rules.corrects_turns else []}
        no_calls = not parsed.calls and not parsed.errors
        if no_calls and parsed.response and rules.ends_on_response:
            update["finish"] = "response"
        elif rules.ends_on_empty_turn and not (parsed.think or parsed.calls or parsed.response):
            update["finish"] = "empty_turn"
        elif no_calls and not parsed.response and rules.corrects_turns:
            update["pending_errors"] = ["no <tool_call> block and no <response> in your reply"]
        return update

    def _tools_node(self, state: ReactState, config: RunnableConfig) -> dict[str, Any]:
        env: ShoppingEnv = config["configurable"]["env"]
        rules = self._rules(config)
        messages: list[Message] = []
        reserve = 1 if self._forces_recommendation(rules) else 0
        # shoplab's rules count tool calls (one kept back for the answer); shoppingbench's only turns.
        limit = min(env.max_steps, self.config.max_steps) if rules.limits_tool_calls else None
        tool_errors: dict[str, str] = {}
        pending = state.get("pending", [])
        for raw in pending:
            call = ToolCall(**raw)
            if limit is not None and env.state.steps >= limit - reserve and call.name != "recommend_product":
                content = f"Error: no tool calls left ({limit}); recommend_product is still possible"
                tool_errors[call.id] = ErrorKind.episode_over.value
            elif call.name == "terminate" and reserve and not env.state.recommended:
                # The answer is the last recommendation: ending without one is always a failure.
                content = "Error: call recommend_product with your answer before terminate"
                tool_errors[call.id] = ErrorKind.rejected.value
            else:
                result = env.step(call.name, call.arguments)
                content = results_json(result.data) if rules.upstream_observations else result.observation
                if result.error is not None:
                    tool_errors[call.id] = result.error.kind.value
            messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
        errors = state.get("pending_errors") or []
        format_errors = state.get("format_errors", 0)
        if errors:
            format_errors = format_errors + 1 if not state.get("pending") else 0
            messages.append({"role": "user", "content": self.config.prompt("format_error", error="; ".join(errors))})
        else:
            format_errors = 0
        update: dict[str, Any] = {"messages": messages, "pending": [], "pending_errors": [],
                                  "format_errors": format_errors, "tool_errors": tool_errors}
        turns = len(state.get("turns", []))
        terminated = env.state.terminate_status is not None or (
            rules.ends_on_terminate_call and any(raw["name"] == "terminate" for raw in pending))
        if terminated or env.state.done:
            update["finish"] = "terminate" if terminated else "env_done"
        elif (limit is not None and env.state.steps >= limit - reserve) or turns >= self.config.max_steps:
            update["finish"] = "step_limit"
        elif format_errors >= self.config.max_format_errors:
            update["finish"] = "format_errors"
        return update

    def _finalize_node(self, state: ReactState, config: RunnableConfig) -> dict[str, Any]:
        env: ShoppingEnv = config["configurable"]["env"]
        rules = self._rules(config)
        if env.state.recommended or not self._forces_recommendation(rules):
            return {}
        update: dict[str, Any] = {"final_recommendation": "none"}
        if state.get("finish") != "llm_error":  # a backend that just failed is not asked again
            update.update(self._ask_for_recommendation(state, env, rules))
        if not env.state.recommended:
            top = _searched_ids(env, limit=1)
            if top:
                env.step("recommend_product", {"product_ids": top[0]})
                update["final_recommendation"] = "fallback"
        return update

    def _ask_for_recommendation(self, state: ReactState, env: ShoppingEnv, rules: EpisodeRules) -> dict[str, Any]:
        seen = _searched_ids(env)
        seen_text = (f"Product ids from your searches, most recent first: {', '.join(seen)}." if seen
                     else "Your searches returned no products.")
        messages = list(state["messages"]) + [{"role": "user", "content": self.config.prompt(
            "final_recommendation", seen_ids=seen_text)}]
        result, parsed, record = self._call_model(messages, env, len(state.get("turns", [])), rules)
        record["final"] = True
        new: list[Message] = [messages[-1]]
        recommend = next((c for c in parsed.calls if c.name == "recommend_product"), None)
        source = "none"
        if recommend is not None and not result.error:
            recommend.id = recommend.id or f"call_{record['turn']}_final"
            new.append({"role": "assistant", "content": result.text, "tool_calls": [recommend.openai()]})
            obs = env.step("recommend_product", recommend.arguments)
            new.append({"role": "tool", "tool_call_id": recommend.id, "name": "recommend_product",
                        "content": obs.observation})
            source = "model" if obs.ok else "none"
            if obs.error is not None:
                return {"messages": new, "turns": [record], "final_recommendation": source,
                        "tool_errors": {recommend.id: obs.error.kind.value}}
        return {"messages": new, "turns": [record], "final_recommendation": source}

    def _rules(self, config: RunnableConfig) -> EpisodeRules:
        return config["configurable"].get("rules") or self.config.rules_for(config["configurable"]["env"])

    def _forces_recommendation(self, rules: EpisodeRules) -> bool:
        return rules.may_force_recommendation and self.config.final_recommendation

    # -- graph --------------------------------------------------------------------
    def _build(self):
        graph = StateGraph(ReactState)
        graph.add_node("agent", self._agent_node)
        graph.add_node("tools", self._tools_node)
        graph.add_node("finalize", self._finalize_node)
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", lambda s: "finalize" if s.get("finish") else "tools",
                                    ["tools", "finalize"])
        graph.add_conditional_edges(
            "tools", lambda s: "finalize" if s.get("finish") else "agent",
            ["agent", "finalize"])
        graph.add_edge("finalize", END)
        return graph.compile()

    def run_episode(self, env: ShoppingEnv, history: list[Message] | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for event in self.stream_episode(env, history):
            if event["event"] == "done":
                info = event["info"]
        return info

    def stream_episode(self, env: ShoppingEnv, history: list[Message] | None = None) -> Iterator[dict[str, Any]]:
        """Run one episode, yielding each message as the graph produces it, then the episode's info.

        Events: `{"event": "assistant", "content", "tool_calls"}`, `{"event": "tool", "name",
        "tool_call_id", "content", "error_kind"}` (`error_kind` is None when the call worked), `{"event": "user", "content"}` (a correction or the request
        for a final recommendation), `{"event": "llm_error", "error"}`, and last `{"event": "done",
        "info"}` with what `run_episode` returns. `history` is earlier user/assistant turns of a
        conversation (the demo's chat), placed between the system prompt and this request.
        """
        # The environment comes with its tools (plug-in toolkits included); the agent only narrows
        # them to its config's selection, and refuses to run without one it was configured for.
        env.use_tools(self.config.tools)
        rules = self.config.rules_for(env)
        started = time.perf_counter()
        system = self.config.system_message(env.tool_specs(), self.tool_format, rules)
        init: dict[str, Any] = {"messages": [{"role": "system", "content": system},
                                             *(history or []),
                                             {"role": "user", "content": env.instruction}],
                                "turns": [], "format_errors": 0}
        final: dict[str, Any] = init
        # Each turn is at most agent -> tools: 2 graph steps, plus finalize.
        for mode, chunk in self.graph.stream(init, config={"configurable": {"env": env, "rules": rules},
                                                           "recursion_limit": 2 * self.config.max_steps + 6},
                                             stream_mode=["updates", "values"]):
            if mode == "values":
                final = chunk
                continue
            for update in chunk.values():
                for record in (update or {}).get("turns", []):
                    if record.get("error"):
                        yield {"event": "llm_error", "error": record["error"]}
                tool_errors = (update or {}).get("tool_errors") or {}
                for message in (update or {}).get("messages", []):
                    yield _message_event(message, tool_errors)
        turns = final.get("turns", [])
        yield {"event": "done", "info": {
            "messages": final["messages"],
            "turns": turns,
            "finish": final.get("finish", "unknown"),
            "episode_rules": rules.name,
            "final_recommendation": final.get("final_recommendation"),
            "llm_turns": len(turns),
            "prompt_tokens": sum(t["prompt_tokens"] for t in turns),
            "completion_tokens": sum(t["completion_tokens"] for t in turns),
            "cached_prompt_tokens": sum(t["cached_prompt_tokens"] for t in turns),
            "llm_seconds": round(sum(t["latency_s"] for t in turns), 3),
            "format_errors": sum(not t["format_ok"] for t in turns),
            "episode_seconds": round(time.perf_counter() - started, 3),
        }}


def _message_event(message: Message, tool_errors: dict[str, str]) -> dict[str, Any]:
    if message["role"] == "assistant":
        return {"event": "assistant", "content": message.get("content") or "",
                "tool_calls": message.get("tool_calls") or []}
    if message["role"] == "tool":
        return {"event": "tool", "name": message.get("name", ""), "tool_call_id": message.get("tool_call_id"),
                "content": message.get("content", ""), "error_kind": tool_errors.get(message.get("tool_call_id"))}
    return {"event": "user", "content": message.get("content", "")}


def _searched_ids(env: ShoppingEnv, limit: int = 10) -> list[str]:
    ids: list[str] = []
    for step in reversed(env.state.history):
        if step.tool == "find_product" and step.ok and isinstance(step.data, list):
            found = [p.get("product_id") for p in step.data if isinstance(p, dict)]
            ids += [i for i in found if isinstance(i, str) and i and i not in ids]
            if len(ids) >= limit:
                break
    return ids[:limit]
