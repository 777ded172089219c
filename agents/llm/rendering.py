"""Turn a stored conversation into what a chat template (or an OpenAI endpoint) expects.

Conversations are stored one way (OpenAI/HF style: assistant turns with `tool_calls`, tool
results as `tool` messages). In the *text* tool format the model writes its calls inside its
text, so tool results go back as user turns wrapped in `<tool_response>`: every chat template
renders that, including those that know nothing of tools or reject a `tool` role.
"""

from __future__ import annotations

import json
from typing import Any

from agents.llm.base import Message


def text_format_messages(messages: list[Message]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            block = f"<tool_response>\n{m.get('content', '')}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool": True})
        else:
            out.append({"role": role, "content": m.get("content") or ""})
    for m in out:
        m.pop("_tool", None)
    return out


def native_format_messages(messages: list[Message]) -> list[Message]:
    """HF chat templates want tool-call arguments as dicts, OpenAI sends JSON strings."""
    out: list[Message] = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c.get("function", {}))
                if isinstance(fn.get("arguments"), str):
                    try:
                        fn["arguments"] = json.loads(fn["arguments"])
                    except json.JSONDecodeError:
                        fn["arguments"] = {}
                calls.append({**c, "function": fn})
            m["tool_calls"] = calls
        if m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out


def messages_for(tool_format: str, messages: list[Message]) -> list[Message]:
    """The conversation in the shape a chat template expects for this tool format."""
    return native_format_messages(messages) if tool_format == "native" else text_format_messages(messages)


def render_for_template(tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]] | None,
                        tool_format: str) -> str:
    return tokenizer.apply_chat_template(messages_for(tool_format, messages),
                                         tools=(tools or None) if tool_format == "native" else None,
                                         add_generation_prompt=True, tokenize=False)
