"""What every agent provides, and the trajectory format episodes are recorded in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from sandbox import ShoppingEnv


class Agent(Protocol):
    name: str

    def run_episode(self, env: ShoppingEnv) -> dict[str, Any] | None:
        """Act in `env` until done; may return extra episode info (tokens, notes)."""


AgentFactory = Callable[[], Agent]


def trajectory_messages(env: ShoppingEnv, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The episode as HF chat `messages` with OpenAI-style tool calls (loads straight into `datasets`)."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": env.instruction})
    for i, step in enumerate(env.state.history):
        call_id = f"call_{i}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": step.tool, "arguments": json.dumps(step.arguments, ensure_ascii=False)}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "name": step.tool, "content": step.observation})
    return messages
