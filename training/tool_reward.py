"""Step-level rewards for GRPO on per-step prompts (ShoppingBench's RL, METHODS.md §7).

reward = format (0 or 1) + tool-call correctness in [-3, 3]. Correctness follows ToolRL's
matching [paper: ToolRL, as ported by ShoppingBench's `shoppingbench_toolrl.compute_score`]:

    r_name  = |names(G) ∩ names(P)| / |names(G) ∪ names(P)|                       in [0, 1]
    r_param = Σ over matched calls |keys(G) ∩ keys(P)| / |keys(G) ∪ keys(P)|      in [0, |G|]
    r_value = Σ over matched calls Σ over G's keys 1[G[k] == P[k]]                in [0, Σ|keys(G)|]
    correctness = 6 · (r_name + r_param + r_value) / (1 + |G| + Σ|keys(G)|) − 3

so an exact match scores 3 and a turn with no usable call −3. Calls are matched by name, in
order. Values are compared after normalisation [proposal]: case and spaces do not matter, and a
comma-separated product id list is compared as a set (the order of ids in one call is not an
error the scorer would see either).
"""

from __future__ import annotations

import json
import re
from typing import Any

from agents.react.parsing import parse_native_turn

_CALL_BLOCK = re.compile(r"<tool_call>.*?</tool_call>", re.S)


def completion_text(completion: Any) -> str:
    """TRL hands over a conversational completion as a list of messages, a standard one as text."""
    if isinstance(completion, str):
        return completion
    parts = []
    for m in completion or []:
        if m.get("role") == "assistant":
            parts.append(m.get("content") or "")
            for c in m.get("tool_calls") or []:
                fn = c.get("function", c)
                args = fn.get("arguments")
                parts.append("<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args
                             if isinstance(args, dict) else _loads(args)}) + "\n</tool_call>")
    return "\n".join(p for p in parts if p)


def _loads(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return out if isinstance(out, dict) else {}


def reference_calls(reference: str | list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    calls = json.loads(reference) if isinstance(reference, str) else reference
    return [(c["function"]["name"], _loads(c["function"]["arguments"])) for c in calls]


def predicted_calls(text: str) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The calls in a generated turn and whether its format is clean (calls, no errors, no stray text)."""
    turn = parse_native_turn(text, None)
    calls = [(c.name, c.arguments) for c in turn.calls]
    stray = _CALL_BLOCK.sub("", text.replace("<|im_end|>", "")).strip()
    clean = bool(calls) and not turn.errors and not stray
    return calls, clean


def _norm(key: str, value: Any) -> Any:
    if value is None:
        return None
    text = " ".join(str(value).lower().split())
    if key == "product_ids":
        return frozenset(x.strip() for x in text.split(",") if x.strip())
    return text


def tool_call_correctness(gold: list[tuple[str, dict[str, Any]]], pred: list[tuple[str, dict[str, Any]]]) -> float:
    if not gold:
        return 3.0 if not pred else -3.0
    gold_names, pred_names = [n for n, _ in gold], [n for n, _ in pred]
    union = set(gold_names) | set(pred_names)
    r_name = len(set(gold_names) & set(pred_names)) / len(union) if union else 0.0
    r_param = r_value = 0.0
    unused = list(pred)
    for name, g_args in gold:
        match = next((p for p in unused if p[0] == name), None)
        if match is None:
            continue
        unused.remove(match)
        p_args = {k: v for k, v in match[1].items() if v is not None}
        g_keys, p_keys = set(g_args), set(p_args)
        keys_union = g_keys | p_keys
        r_param += len(g_keys & p_keys) / len(keys_union) if keys_union else 1.0
        r_value += sum(_norm(k, g_args[k]) == _norm(k, p_args.get(k)) for k in g_keys)
    r_max = 1 + len(gold) + sum(len(a) for _, a in gold)
    return 6.0 * (r_name + r_param + r_value) / r_max - 3.0


def step_reward(completion: Any, reference: str | list[dict[str, Any]]) -> dict[str, float]:
    calls, clean = predicted_calls(completion_text(completion))
    correctness = tool_call_correctness(reference_calls(reference), calls)
    return {"format": 1.0 if clean else 0.0, "correctness": correctness}


def format_reward(prompts, completions, **_: Any) -> list[float]:
    """TRL reward function: 1 for a clean tool-call turn, else 0."""
    return [1.0 if predicted_calls(completion_text(c))[1] else 0.0 for c in completions]


def tool_call_reward(prompts, completions, reference, **_: Any) -> list[float]:
    """TRL reward function: ToolRL-style correctness against the teacher's turn (`reference` column)."""
    return [tool_call_correctness(reference_calls(r), predicted_calls(completion_text(c))[0])
            for c, r in zip(completions, reference, strict=True)]
