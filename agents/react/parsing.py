"""Read tool calls out of a model's turn: ShoppingBench's text format, Hermes/Qwen tags, or API structures.

A turn in the text format looks like

    <think>...</think>
    <tool_call>[{"name": "find_product", "parameters": {"q": "red shoes"}}]</tool_call>
    <response>...</response>

Models get this wrong in many small ways (one object instead of a list, `arguments` instead of
`parameters`, a missing closing tag, single quotes, a code fence). Everything recoverable is
recovered; anything else becomes a readable error that goes back to the model as an observation.
Model output is only ever parsed as data (`json`, then `ast.literal_eval`), never executed.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_CALLS_PER_TURN = 5
MAX_CALL_CHARS = 20_000
_TAG = r"<{0}>(.*?)(?:</{0}>|$)"
_THINK = re.compile(_TAG.format("think"), re.S)
_RESPONSE = re.compile(_TAG.format("response"), re.S)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|(?=<response>)|$)", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


@dataclass
class ParsedTurn:
    think: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    response: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def format_ok(self) -> bool:
        return not self.errors and bool(self.calls or self.response)


def _strip_fence(text: str) -> str:
    r"""A call wrapped in a Markdown code fence (```json ... ```), unwrapped. String operations, not a
    regex: `\s*```$` backtracks quadratically over a long run of spaces (60k took 8 s)."""
    text = text.strip()
    if text.startswith("```"):
        text = text[3:].removeprefix("json")
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


def _loads(text: str) -> Any:
    if len(text) > 2 * MAX_CALL_CHARS:  # before any work on it
        raise ValueError(f"longer than {MAX_CALL_CHARS} characters")
    text = _strip_fence(text)
    if len(text) > MAX_CALL_CHARS:
        raise ValueError(f"longer than {MAX_CALL_CHARS} characters")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        # Python-style literals ('single quotes', True/None) as data only.
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError("not valid JSON") from None


def _as_call(obj: Any) -> ToolCall:
    if not isinstance(obj, dict):
        raise ValueError(f"each tool call must be an object with name and parameters, got {type(obj).__name__}")
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI shape pasted as text
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a tool call has no 'name'")
    args = obj.get("parameters", obj.get("arguments", {}))
    if isinstance(args, str):
        args = _loads(args) if args.strip() else {}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValueError(f"the parameters of {name} must be an object")
    return ToolCall(name=name.strip(), arguments=args)


def parse_text_turn(text: str, max_calls: int | None = MAX_CALLS_PER_TURN) -> ParsedTurn:
    """The turn's think, calls and response; calls past `max_calls` are dropped with an error (None: keep all)."""
    turn = ParsedTurn()
    if m := _THINK.search(text):
        turn.think = m.group(1).strip()
    if m := _RESPONSE.search(text):
        turn.response = m.group(1).strip()
    for block in _TOOL_CALL.findall(text):
        block = block.strip()
        if not block:
            turn.errors.append("empty <tool_call> block")
            continue
        try:
            payload = _loads(block)
        except ValueError:
            turn.errors.append(f"could not parse the <tool_call> block as JSON: {block[:200]!r}")
            continue
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            try:
                turn.calls.append(_as_call(item))
            except ValueError as exc:
                turn.errors.append(str(exc))
    if max_calls is not None and len(turn.calls) > max_calls:
        turn.errors.append(f"{len(turn.calls)} tool calls in one turn; at most {max_calls} are run")
        turn.calls = turn.calls[:max_calls]
    return turn


def parse_native_turn(text: str, tool_calls: list[dict[str, Any]] | None,
                      max_calls: int | None = MAX_CALLS_PER_TURN) -> ParsedTurn:
    """Structured calls from an OpenAI-compatible API; falls back to the text format in `text`."""
    if not tool_calls:
        turn = parse_text_turn(text or "", max_calls)
        if not turn.calls and not turn.response and not turn.errors and text:
            turn.response = text.strip()
        return turn
    turn = ParsedTurn(think=(m.group(1).strip() if text and (m := _THINK.search(text)) else ""))
    for c in tool_calls[:max_calls]:
        fn = c.get("function") or {}
        try:
            call = _as_call({"name": fn.get("name"), "arguments": fn.get("arguments") or {}})
            call.id = c.get("id") or ""
            turn.calls.append(call)
        except ValueError as exc:
            turn.errors.append(str(exc))
    return turn
