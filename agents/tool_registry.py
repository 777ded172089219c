"""Tools from outside the sandbox (query rewriters, recsys rankers) that agents can be given by name.

A package registers a factory once; an agent config lists the names it wants. The factory gets
the episode's `ShoppingEnv` and returns the tool's spec and handler, so a tool may read the
world (catalogue, search) without the agent knowing anything about it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox import ShoppingEnv
from sandbox.tools import ToolArgs, ToolSpec

ToolHandler = Callable[[ToolArgs], Any]
AgentToolFactory = Callable[[ShoppingEnv], tuple[ToolSpec, ToolHandler]]

_TOOLS: dict[str, AgentToolFactory] = {}


def register_agent_tool(name: str, factory: AgentToolFactory) -> None:
    _TOOLS[name] = factory


def agent_tool_names() -> list[str]:
    return sorted(_TOOLS)


def attach_agent_tools(env: ShoppingEnv, names: list[str]) -> None:
    unknown = [n for n in names if n not in _TOOLS]
    if unknown:
        raise KeyError(f"unknown agent tools {unknown}; registered: {', '.join(agent_tool_names()) or 'none'}")
    for name in names:
        spec, handler = _TOOLS[name](env)
        if spec.name != name:
            raise ValueError(f"tool factory {name!r} returned a spec named {spec.name!r}")
        env.register_tool(spec, handler)
