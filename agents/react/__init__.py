"""The LangGraph ReAct shopping agent, its config, prompts and tool-call parsing."""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "agents.react.config": ["DEFAULT_TOOLS", "ReactConfig"],
    "agents.react.graph": ["ChatClient", "ReactAgent"],
    "agents.react.parsing": ["ParsedTurn", "ToolCall", "parse_native_turn", "parse_text_turn"],
})
