"""Agents that act in the sandbox: scripted baselines, the LangGraph ReAct agent over any LLM
backend, the benchmark runner and run reports.

Public names load on first use (`shoplab_core.lazy`): `import agents` does not import LangGraph or torch.
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "agents.base": ["Agent", "AgentFactory", "trajectory_messages"],
    "agents.llm": ["BatchingChat", "ChatResult", "LLMConfig", "LLMError", "SamplingConfig", "make_llm"],
    "agents.react": ["ReactAgent", "ReactConfig"],
    "agents.registry": ["agent_names", "agent_needs_llm", "make_agent", "register_agent"],
    "agents.runner": ["RunConfig", "run_benchmark", "summarize"],
    "agents.scripted": ["HeuristicAgent", "OracleAgent"],
    "agents.trajectories": ["load_trajectories"],
})
