"""How a ReAct episode runs: ShoppingBench's rules, or shoplab's.

`shoppingbench` restates ShoppingBench's public rollout loop, so that a score here means what it
means there and an agent trained here meets the same loop when it is evaluated there:

- at most `max_steps` (30) model turns; a turn may hold any number of tool calls, and all of them
  run, in order;
- the episode ends after a turn that calls `terminate` (every call of that turn still runs), or on
  a turn with no `<think>`, no tool call that parses and no `<response>`. A turn with a think and
  broken tool-call JSON is not the end: it just has no calls. Nothing is corrected or forced: a model
  that never calls `recommend_product` has recommended nothing;
- a call to a name that is not a tool is skipped without a word;
- each call's id is `tool_call_id(name, parameters)`, and the model sees the turn's results as
  one `turn_observation`: `<obs>` + ujson of `[{"tool_call_id": …, "results": …}, …]` + `</obs>`
  (no observation at all for a turn that ran no call), every observation whole.

`shoplab` is this project's own loop, a kinder one for small models: `max_steps` limits tool calls
as well as turns (one kept back for the answer), at most 5 calls a turn, unusable turns and unknown
tools get an `Error: …` back (`max_format_errors` in a row end the episode), a `<response>` ends
it, `terminate` before any recommendation is refused, a final recommendation is asked for (and, failing
that, the top search hit is recommended: `final_recommendation: fallback`, kept apart in
`asr_model_only`), and older observations are shortened in the prompt.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import ujson

from agents.react.parsing import MAX_CALLS_PER_TURN

EpisodeRulesSetting = Literal["auto", "shoppingbench", "shoplab"]
EPISODE_RULES_SETTINGS: tuple[str, ...] = get_args(EpisodeRulesSetting)


@dataclass(frozen=True)
class EpisodeRules:
    """One loop's rules, as the graph asks them. Only the two below exist: pick one, do not mix."""

    name: str
    limits_tool_calls: bool  # `max_steps` limits tool calls too, not only model turns
    max_calls_per_turn: int | None  # calls run per turn (None: all of them)
    corrects_turns: bool  # unusable turns and unknown tools get an error back; too many in a row end it
    ends_on_response: bool  # a turn with a <response> and no call ends the episode
    ends_on_empty_turn: bool  # a turn with no think, no call and no response ends the episode
    ends_on_terminate_call: bool  # a turn that calls terminate ends it, whatever the call returned
    may_force_recommendation: bool  # ReactConfig.final_recommendation applies (terminate waits for one)
    upstream_observations: bool  # upstream's call ids and <obs> lists, unshortened; unknown tools skipped

    def step_budget(self, max_steps: int) -> str:
        """The budget as the system prompt states it (`You have at most …`)."""
        if self.limits_tool_calls:
            return f"{max_steps} tool calls"
        return f"{max_steps} turns, each with as many tool calls as you need"

    @property
    def observation_tag(self) -> str:
        """The tag tool results come back in, in the text tool format."""
        return "<obs>" if self.upstream_observations else "<tool_response>"


SHOPPINGBENCH = EpisodeRules("shoppingbench", limits_tool_calls=False, max_calls_per_turn=None,
                             corrects_turns=False, ends_on_response=False, ends_on_empty_turn=True,
                             ends_on_terminate_call=True, may_force_recommendation=False,
                             upstream_observations=True)
SHOPLAB = EpisodeRules("shoplab", limits_tool_calls=True, max_calls_per_turn=MAX_CALLS_PER_TURN,
                       corrects_turns=True, ends_on_response=True, ends_on_empty_turn=False,
                       ends_on_terminate_call=False, may_force_recommendation=True, upstream_observations=False)
_BY_NAME = {r.name: r for r in (SHOPPINGBENCH, SHOPLAB)}


def resolve_episode_rules(setting: str, env: Any = None) -> EpisodeRules:
    """The rules for `setting`; `auto` follows the environment's profile (shoplab's without one)."""
    if setting not in EPISODE_RULES_SETTINGS:
        raise ValueError(f"episode_rules must be one of {', '.join(EPISODE_RULES_SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return _BY_NAME[setting]
    profile = getattr(env, "profile", "shoplab") if env is not None else "shoplab"
    if profile not in _BY_NAME:
        raise ValueError(f"episode_rules: auto has no rules for the environment's profile {profile!r}; "
                         f"set episode_rules to one of {', '.join(_BY_NAME)}")
    return _BY_NAME[profile]


def tool_call_id(name: str, parameters: Any) -> str:
    """Upstream's id of a call: md5 of `name\\nstr(parameters)`, URL-safe base64 without `=+/`, 8 characters.

    `str(parameters)` is Python's repr of the dict, so the id depends on the order of its keys."""
    digest = hashlib.md5(f"{name}\n{parameters}".encode()).digest()
    text = base64.urlsafe_b64encode(digest).decode("ascii")
    return text.replace("=", "").replace("+", "").replace("/", "")[:8]


def results_json(results: Any) -> str:
    """One call's results as upstream serialises them (ujson's defaults: compact, `\\/`, `\\uXXXX`, `null`)."""
    try:
        return ujson.dumps(results)
    except (TypeError, OverflowError):  # not JSON data (a plug-in tool's object): its text instead
        return ujson.dumps(str(results))


def turn_observation(results: list[tuple[str, str]]) -> str:
    """What the model sees after a turn: `(tool_call_id, results_json)` pairs, in call order, as
    `<obs>` + ujson.dumps([{"tool_call_id": id, "results": results}, ...]) + `</obs>`.

    Built from the serialised results so the stored tool messages are used as they are; ujson writes
    a list of dicts with no spaces, so the concatenation is the same string."""
    items = ",".join('{"tool_call_id":' + ujson.dumps(call_id) + ',"results":' + text + "}"
                     for call_id, text in results)
    return f"<obs>[{items}]</obs>"


def observations_as_upstream(messages: list[dict[str, Any]], tool_format: str) -> list[dict[str, Any]]:
    """The conversation as upstream's model sees it. Text format: each turn's tool messages become one
    user message, its `turn_observation`; native: the tool messages as they are (an API wants one per
    call), each holding that call's `results_json`. Nothing is shortened."""
    if tool_format == "native":
        return list(messages)
    out: list[dict[str, Any]] = []
    group: list[tuple[str, str]] = []
    for m in [*messages, None]:
        if m is not None and m["role"] == "tool":
            group.append((m.get("tool_call_id") or "", m.get("content") or "null"))
            continue
        if group:
            out.append({"role": "user", "content": turn_observation(group)})
            group = []
        if m is not None:
            out.append(m)
    return out
