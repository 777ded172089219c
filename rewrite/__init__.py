"""BEQUE query rewriting for long-tail queries: data, rule and LLM rewriters, offline feedback, eval.

Training (SFT, PRO, DPO) and the `shoplab rewrite` CLI live in `training/`, which sits on top.
"""

from rewrite.cleaning import clean_rewrite
from rewrite.config import DataConfig, EvalSettings, FeedbackSettings
from rewrite.data import build_rewrite_data, read_queries
from rewrite.evaluate import retrieval_metrics
from rewrite.feedback import collect_feedback, preference_rows
from rewrite.loader import load_rewriter
from rewrite.longtail import LongTailGenerator, LongTailQuery
from rewrite.model import RewriteModel, TableRewriter, resolve_stage
from rewrite.prompts import prompt_messages
from rewrite.retrieval import RetrievalJudge, RewardWeights, RewriteScores, partial_order
from rewrite.rules import RuleRewriter
from rewrite.tool import RewriteToolkit

__all__ = [
    "DataConfig", "EvalSettings", "FeedbackSettings", "LongTailGenerator", "LongTailQuery", "RetrievalJudge",
    "RewardWeights", "RewriteModel", "RewriteScores", "RewriteToolkit", "RuleRewriter", "TableRewriter", "build_rewrite_data",
    "clean_rewrite", "collect_feedback", "load_rewriter", "partial_order", "preference_rows", "prompt_messages",
    "read_queries", "resolve_stage", "retrieval_metrics",
]
