"""BEQUE query rewriting for long-tail queries: data, rule and LLM rewriters, offline feedback, eval.

Training (SFT, PRO, DPO) and the `shoplab rewrite` CLI live in `training/`, which sits on top.
Public names load on first use (`shoplab_core.lazy`).
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "rewrite.cleaning": ["clean_rewrite"],
    "rewrite.config": ["DataConfig", "EvalSettings", "FeedbackSettings"],
    "rewrite.data": ["build_rewrite_data", "read_queries"],
    "rewrite.evaluate": ["retrieval_metrics"],
    "rewrite.feedback": ["collect_feedback", "feedback_headroom", "preference_rows"],
    "rewrite.loader": ["load_rewriter"],
    "rewrite.longtail": ["LongTailGenerator", "LongTailQuery"],
    "rewrite.model": ["RewriteModel", "TableRewriter", "resolve_stage"],
    "rewrite.prompts": ["prompt_messages"],
    "rewrite.retrieval": ["RetrievalJudge", "RewardWeights", "RewriteScores", "partial_order"],
    "rewrite.rules": ["RuleRewriter"],
    "rewrite.tool": ["RewriteToolkit"],
})
