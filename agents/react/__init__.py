"""The LangGraph ReAct shopping agent, its config, prompts and tool-call parsing."""

from agents.react.config import SHOPPINGBENCH_TOOLS, ReactConfig
from agents.react.graph import ChatClient, ReactAgent, describe_tools
from agents.react.parsing import ParsedTurn, ToolCall, parse_native_turn, parse_text_turn

__all__ = ["SHOPPINGBENCH_TOOLS", "ChatClient", "ParsedTurn", "ReactAgent", "ReactConfig", "ToolCall",
           "describe_tools", "parse_native_turn", "parse_text_turn"]
