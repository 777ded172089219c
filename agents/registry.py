"""Agents by name, so the runner and the CLI never hard-code a list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.base import Agent

_AGENTS: dict[str, Callable[..., Agent]] = {}


def register_agent(name: str, factory: Callable[..., Agent]) -> None:
    _AGENTS[name] = factory


def make_agent(name: str, **kwargs: Any) -> Agent:
    if name not in _AGENTS:
        raise KeyError(f"unknown agent {name!r}; available: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name](**kwargs)


def agent_names() -> list[str]:
    return sorted(_AGENTS)


def _register_builtin() -> None:
    from agents.scripted import HeuristicAgent, OracleAgent

    register_agent("heuristic", HeuristicAgent)
    register_agent("oracle", OracleAgent)


_register_builtin()
