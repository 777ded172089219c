"""Agents that act in the sandbox, their registry and the benchmark runner."""

from agents.base import Agent, AgentFactory, trajectory_messages
from agents.registry import agent_names, make_agent, register_agent
from agents.runner import RunConfig, run_benchmark, summarize
from agents.scripted import HeuristicAgent, OracleAgent

__all__ = ["Agent", "AgentFactory", "HeuristicAgent", "OracleAgent", "RunConfig", "agent_names", "make_agent",
           "register_agent", "run_benchmark", "summarize", "trajectory_messages"]
