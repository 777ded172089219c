"""The LangGraph ReAct shopping agent, its config, prompts and tool-call parsing."""

from agents.react.config import DEFAULT_TOOLS, ReactConfig
from agents.react.graph import ChatClient, ReactAgent
from agents.react.parsing import ParsedTurn, ToolCall, parse_native_turn, parse_text_turn

__all__ = ["DEFAULT_TOOLS", "ChatClient", "ParsedTurn", "ReactAgent", "ReactConfig", "ToolCall",
           "parse_native_turn", "parse_text_turn"]
