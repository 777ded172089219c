"""Scripted agents: the heuristic floor and the reward-reading oracle."""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "agents.scripted.heuristic": ["HeuristicAgent"],
    "agents.scripted.oracle": ["OracleAgent"],
})
