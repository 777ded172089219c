"""`RewriteToolkit`: the agent asks a query rewriter (BEQUE-trained LLM or rules) for search queries.

Offered to agents as the `rewrite` plug-in toolkit (entry point `shoplab.toolkits`): an agent config
names it with its rewriter, `toolkits: {rewrite: {rewriter: rule}}` (or a trained stage folder such
as `runs/rewrite/align_pro`), and lists `rewrite_query` in `tools`. One toolkit instance loads its
rewriter once (on the first call) and serves every episode (a rewriter keeps no episode state).
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import Field, field_validator

from sandbox.rewrite_stage import QueryRewriter
from sandbox.toolkit import ToolArgs, Toolkit, tool
from sandbox.tools import check_query_text


class RewriteQueryArgs(ToolArgs):
    query: str = Field(description="A shopper's request or a query that found nothing useful.")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return check_query_text(v, "query")


class RewriteToolkit(Toolkit):
    """Query rewriting as an agent tool."""

    group = "rewrite"

    def __init__(self, rewriter: str | QueryRewriter = "rule"):
        """`rewriter`: `rule`, a stage/adapter/model folder, or any callable from a query to rewrites."""
        self._spec = rewriter if isinstance(rewriter, str) else None
        self._rewriter: QueryRewriter | None = None if isinstance(rewriter, str) else rewriter
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, world: Any = None, rewriter: str = "rule") -> RewriteToolkit:
        return cls(rewriter=rewriter)

    def rewriter(self) -> QueryRewriter:
        with self._lock:
            if self._rewriter is None:
                from rewrite.loader import load_rewriter

                self._rewriter = load_rewriter(self._spec or "rule")
            return self._rewriter

    @tool("read", icon="✏️")
    def rewrite_query(self, args: RewriteQueryArgs) -> Any:
        """Rewrite a long or colloquial shopping request into short product search queries; pass them to find_product."""
        rewrites = [r for r in self.rewriter()(args.query) if r]
        if not rewrites:
            return "No rewrite: search with the request's key product words."
        return {"query": args.query, "rewrites": rewrites}
