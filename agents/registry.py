"""Agents by name, so the runner and the CLI never hard-code a list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Agent

_AGENTS: dict[str, Callable[..., Agent]] = {}
_NEEDS_LLM: set[str] = set()


def register_agent(name: str, factory: Callable[..., Agent], needs_llm: bool = False) -> None:
    """`needs_llm` agents are built with `llm=` (a shared, thread-safe chat client) by the runner."""
    _AGENTS[name] = factory
    if needs_llm:
        _NEEDS_LLM.add(name)
    else:
        _NEEDS_LLM.discard(name)


def agent_needs_llm(name: str) -> bool:
    return name in _NEEDS_LLM


def make_agent(name: str, **kwargs: Any) -> Agent:
    if name not in _AGENTS:
        raise KeyError(f"unknown agent {name!r}; available: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name](**kwargs)


def agent_names() -> list[str]:
    return sorted(_AGENTS)


def _register_builtin() -> None:
    from agents.scripted import HeuristicAgent, OracleAgent

    register_agent("heuristic", HeuristicAgent)
    register_agent("heuristic_price", lambda **kw: HeuristicAgent(apply_price=True, **kw))
    register_agent("oracle", OracleAgent)
    register_agent("teacher", lambda **kw: OracleAgent(query_source="instruction", visible_hits=3, **kw))
    register_agent("react", _react_agent, needs_llm=True)


def _react_agent(**kwargs: Any) -> Agent:
    from agents.react import ReactAgent

    return ReactAgent(**kwargs)


_register_builtin()
