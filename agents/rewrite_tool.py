"""`rewrite_query`: the agent asks a query rewriter (BEQUE-trained LLM or rules) for search queries.

Registered in the tool registry; an agent config lists it in `extra_tools` and names the rewriter
(`rewriter: rule` or a trained stage folder such as `runs/rewrite/align_pro`). The rewriter is
loaded once per process and shared by every episode (it keeps no episode state).
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import Field, field_validator

from agents.tool_registry import register_agent_tool
from sandbox.rewrite_stage import QueryRewriter
from sandbox.tools import ToolArgs, ToolSpec, check_query_text

_lock = threading.Lock()
_state: dict[str, Any] = {"spec": "rule", "rewriter": None}


class RewriteQueryArgs(ToolArgs):
    query: str = Field(description="A shopper's request or a query that found nothing useful.")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return check_query_text(v, "query")


REWRITE_QUERY_SPEC = ToolSpec(
    name="rewrite_query",
    description="Rewrite a long or colloquial shopping request into short product search queries; "
                "pass them to find_product.",
    args_model=RewriteQueryArgs, kind="read", group="rewrite")


def configure_rewrite_tool(rewriter: str | QueryRewriter) -> None:
    """Which rewriter `rewrite_query` uses: `rule`, a stage/adapter/model folder, or any callable."""
    with _lock:
        if isinstance(rewriter, str):
            if rewriter != _state["spec"]:
                _state.update(spec=rewriter, rewriter=None)
        else:
            _state.update(spec=None, rewriter=rewriter)


def _rewriter() -> QueryRewriter:
    with _lock:
        if _state["rewriter"] is None:
            from rewrite import load_rewriter

            _state["rewriter"] = load_rewriter(_state["spec"])
        return _state["rewriter"]


def _rewrite_query_tool(env) -> tuple[ToolSpec, Any]:
    def handle(args: RewriteQueryArgs) -> Any:
        rewrites = [r for r in _rewriter()(args.query) if r]
        if not rewrites:
            return "No rewrite: search with the request's key product words."
        return {"query": args.query, "rewrites": rewrites}

    return REWRITE_QUERY_SPEC, handle


register_agent_tool("rewrite_query", _rewrite_query_tool)
