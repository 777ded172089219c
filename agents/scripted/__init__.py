from agents.scripted.heuristic import HeuristicAgent
from agents.scripted.oracle import OracleAgent

__all__ = ["HeuristicAgent", "OracleAgent"]
