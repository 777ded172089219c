"""Teacher trajectories → the student's training data (ShoppingBench's recipe, METHODS.md §7).

1. Rejection sampling: keep successful episodes, and per task the one with the fewest steps.
2. Rewrite each into the conversation the student would have had: the student's system prompt,
   the instruction, each teacher turn as Hermes-style tool calls (`training.chat_template`), each
   observation shortened exactly as the agent shortens it at inference (`ReactAgent.prompt_messages`).
   A `recommend_product` followed by `terminate` becomes one turn with both calls.
3. Drop episodes whose teacher used a product id the student could not have seen (an id beyond
   the shortened observations): training on them teaches the student to invent ids.
4. Optionally (`error_recovery`, a share of the episodes) put one failed search before the teacher's
   first one: a wrong version of that call, of a kind the student was seen to make, and the real
   tool's answer to it. The wrong turn is marked `no_loss` (the chat template leaves it out of the
   loss), so the student learns to recover from the mistake, never to make it.
5. Split into per-step samples `(conversation so far → next assistant turn)` (SFT `step` unit,
   and the prompts of step-level GRPO with the teacher's turn as the reference), or keep one
   sample per episode with the loss on every assistant turn (SFT `episode` unit). The two are the
   same loss when the agent never re-shortens an older observation (old == max observation chars):
   every step's prompt is then a prefix of the episode, and the episode costs one forward pass
   instead of one per step.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from agents.react import ReactAgent, ReactConfig
from agents.trajectories import iter_episodes

_ID = re.compile(r"\b\d{5,}\b")


@dataclass
class DistillDataReport:
    episodes: int = 0
    successful: int = 0
    tasks_kept: int = 0
    dropped_unseen_ids: int = 0
    steps: int = 0
    recovery_turns: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def shortest_successful(run_dirs: Sequence[str | Path]) -> tuple[list[dict[str, Any]], DistillDataReport]:
    report = DistillDataReport()
    best: dict[str, dict[str, Any]] = {}
    for row in iter_episodes(run_dirs):
        report.episodes += 1
        if not row["success"]:
            continue
        report.successful += 1
        kept = best.get(row["task_id"])
        if kept is None or row["steps"] < kept["steps"]:
            best[row["task_id"]] = row
    return list(best.values()), report


def _call(name: str, arguments: Any) -> dict[str, Any]:
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments or {})
    args = {k: v for k, v in args.items() if v is not None}
    return {"type": "function", "function": {"name": name, "arguments": args}}


def student_conversation(trajectory: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """The teacher's episode as the student's messages (observations not yet shortened)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for m in trajectory:
        if m["role"] == "system":
            continue
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            calls = [_call(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []]
            prev = out[-2] if len(out) >= 2 else None
            # recommend_product then terminate: one turn, as the student is taught to finish.
            if (calls and calls[0]["function"]["name"] == "terminate" and prev is not None
                    and prev["role"] == "assistant" and prev.get("tool_calls")
                    and prev["tool_calls"][-1]["function"]["name"] == "recommend_product"):
                tool_msg = out.pop()
                prev["tool_calls"] = prev["tool_calls"] + calls
                out.append(tool_msg)
                continue
            out.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif m["role"] == "tool":
            out.append({"role": "tool", "name": m.get("name") or "", "content": m["content"]})
    return out


def _shortened(agent: ReactAgent, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return agent.prompt_messages(messages)


def _ids_in_calls(message: dict[str, Any]) -> set[str]:
    ids: set[str] = set()
    for c in message.get("tool_calls") or []:
        for value in c["function"]["arguments"].values():
            ids.update(_ID.findall(str(value)))
    return ids


def uses_unseen_ids(agent: ReactAgent, messages: list[dict[str, Any]]) -> bool:
    """True if some turn names a product id absent from everything the student saw before it."""
    for t, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        seen = set()
        for earlier in _shortened(agent, messages[:t]):
            seen.update(_ID.findall(earlier.get("content") or ""))
        if _ids_in_calls(m) - seen:
            return True
    return False


SearchObserver = Callable[[str, dict[str, Any]], str]  # (request, find_product arguments) -> the tool's answer


def corrupted_search(arguments: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    """(kind, a wrong version of a teacher's `find_product` arguments), or None when no kind applies.

    [proposal] The kinds are the mistakes the shipped students made in their first searches on product
    dev tasks and in the demo: a one-sided price bound without its dash ("55" for over 55) or on the
    wrong side ("500-" for under 500), a currency word inside the price ("15-37-pesos"), a service the
    request did not ask for, and a service it asked for left out.
    """
    price = str(arguments.get("price") or "")
    kinds: list[tuple[str, dict[str, Any]]] = []
    if price.endswith("-") or price.startswith("-"):
        bound = price.strip("-")
        kinds.append(("price_bound_without_dash", {**arguments, "price": bound}))
        kinds.append(("price_direction_flipped", {**arguments, "price": f"-{bound}" if price.endswith("-") else f"{bound}-"}))
    if price:
        kinds.append(("price_with_currency", {**arguments, "price": f"{price.rstrip('-')}-pesos"}))
    asked = [s.strip() for s in str(arguments.get("service") or "").split(",") if s.strip()]
    extra = [s for s in ("official", "freeShipping", "COD", "flashsale") if s not in asked]
    if extra:
        kinds.append(("unasked_service", {**arguments, "service": ",".join([*sorted(asked), rng.choice(extra)])}))
    if asked:
        kinds.append(("service_left_out", {k: v for k, v in arguments.items() if k != "service"}))
    return rng.choice(kinds) if kinds else None


def with_recovery_turn(messages: list[dict[str, Any]], observe: SearchObserver,
                       rng: random.Random) -> tuple[list[dict[str, Any]], str] | None:
    """The conversation with one failed search before the teacher's first turn (see the module
    docstring), and the kind of mistake; None when that turn is not a search or no mistake applies."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None:
        return None
    calls = messages[first].get("tool_calls") or []
    if len(calls) != 1 or calls[0]["function"]["name"] != "find_product":
        return None
    wrong = corrupted_search(calls[0]["function"]["arguments"], rng)
    if wrong is None:
        return None
    kind, arguments = wrong
    request = next((m["content"] for m in messages if m["role"] == "user"), "")
    mistake = {"role": "assistant", "content": "", "no_loss": True,
               "tool_calls": [{"type": "function", "function": {"name": "find_product", "arguments": arguments}}]}
    answer = {"role": "tool", "name": "find_product", "content": observe(request, arguments)}
    return messages[:first] + [mistake, answer] + messages[first:], kind


def step_samples(agent: ReactAgent, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `(prompt, completion)` per assistant turn, the prompt shortened as at inference; a `no_loss`
    turn (a deliberate mistake) is never a completion."""
    out = []
    for t, m in enumerate(messages):
        if m["role"] == "assistant" and not m.get("no_loss"):
            out.append({"prompt": _shortened(agent, messages[:t]), "completion": [m], "step": len(out)})
    return out


def prefix_consistent(config: ReactConfig) -> bool:
    """Whether every step's prompt is a prefix of the whole episode (see the module docstring)."""
    return config.old_observation_chars >= config.max_observation_chars


def build_distill_datasets(run_dirs: Sequence[str | Path], agent_config: ReactConfig, tool_specs,
                           unit: str = "episode", error_recovery: float = 0.0, observe: SearchObserver | None = None,
                           seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset, DistillDataReport]:
    """(SFT dataset, per-step dataset, report). SFT rows: `messages` (episode) or `prompt`/`completion` (step).

    Per-step rows carry `reference` (the teacher's turn as JSON) for step-level GRPO's reward.
    `error_recovery` (0..1) is the share of episodes given a failed first search, answered by `observe`
    (the real tool), drawn with `seed`; rows then carry `recovery` (the mistake's kind, or "").
    """
    if unit not in ("episode", "step"):
        raise ValueError("unit must be 'episode' or 'step'")
    if not 0.0 <= error_recovery <= 1.0:
        raise ValueError(f"error_recovery is a share of the episodes, in [0, 1]; got {error_recovery}")
    if error_recovery and observe is None:
        raise ValueError("error_recovery needs `observe`, the tool that answers the failed searches")
    rng = random.Random(f"{seed}:recovery")
    if unit == "episode" and not prefix_consistent(agent_config):
        raise ValueError("episode samples need old_observation_chars >= max_observation_chars in the student's "
                         "agent config (otherwise its prompts are not prefixes of the episode); use unit: step")
    agent = ReactAgent(llm=None, config=agent_config, tool_format="native")  # only its prompt shaping is used
    system = agent_config.system_message(tool_specs, "native")
    rows, report = shortest_successful(run_dirs)
    episodes, steps = [], []
    for row in rows:
        messages = student_conversation(row["trajectory"], system)
        if uses_unseen_ids(agent, messages):
            report.dropped_unseen_ids += 1
            continue
        report.tasks_kept += 1
        meta = {"task_id": row["task_id"], "intent": row["intent"], "recovery": ""}
        if error_recovery and rng.random() < error_recovery:
            recovered = with_recovery_turn(messages, observe, rng)
            if recovered is not None:
                messages, meta["recovery"] = recovered
                report.recovery_turns += 1
        for s in step_samples(agent, messages):
            steps.append({**meta, "prompt": s["prompt"], "completion": s["completion"], "step": s["step"],
                          "reference": json.dumps(s["completion"][0]["tool_calls"], ensure_ascii=False)})
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        # The observations after the last turn carry no loss; they would only cost a forward pass.
        episodes.append({**meta, "messages": _shortened(agent, messages[:last + 1])})
    report.steps = len(steps)
    step_ds = datasets.Dataset.from_list(_arrow_safe(steps)) if steps else datasets.Dataset.from_list([])
    if unit == "step":
        sft = step_ds.select_columns(["prompt", "completion"]) if steps else step_ds
    else:
        sft = datasets.Dataset.from_list(_arrow_safe(episodes)) if episodes else datasets.Dataset.from_list([])
    return sft, step_ds, report


def _arrow_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow wants one schema: tool-call arguments (dicts of varying keys) are stored as JSON text."""
    def fix(m: dict[str, Any]) -> dict[str, Any]:
        calls = m.get("tool_calls")
        return {"role": m["role"], "content": m.get("content") or "", "name": m.get("name"),
                "no_loss": bool(m.get("no_loss")),
                "tool_calls": [{"type": "function", "function": {"name": c["function"]["name"],
                                "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
                               for c in calls] if calls else None}

    out = []
    for r in rows:
        r = dict(r)
        for key in ("messages", "prompt", "completion"):
            if key in r:
                r[key] = [fix(m) for m in r[key]]
        out.append(r)
    return out
