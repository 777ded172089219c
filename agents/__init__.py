"""Agents that act in the sandbox: scripted baselines, the LangGraph ReAct agent over any LLM
backend, the benchmark runner and run reports."""

from agents.base import Agent, AgentFactory, trajectory_messages
from agents.llm import BatchingChat, ChatResult, LLMConfig, LLMError, SamplingConfig, make_llm
from agents.react import ReactAgent, ReactConfig
from agents.registry import agent_names, agent_needs_llm, make_agent, register_agent
from agents.runner import RunConfig, run_benchmark, summarize
from agents.scripted import HeuristicAgent, OracleAgent
from agents.trajectories import load_trajectories

__all__ = ["Agent", "AgentFactory", "BatchingChat", "ChatResult", "HeuristicAgent", "LLMConfig", "LLMError",
           "OracleAgent", "ReactAgent", "ReactConfig", "RunConfig", "SamplingConfig", "agent_names",
           "agent_needs_llm", "load_trajectories",
           "make_agent", "make_llm", "register_agent",
           "run_benchmark", "summarize", "trajectory_messages"]
