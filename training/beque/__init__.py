"""BEQUE (long-tail query rewriting) end to end: data -> SFT -> offline feedback -> PRO / DPO -> eval.

The rewriter's parts (data, rules, the model, retrieval feedback, metrics) live in `rewrite/`; this
package trains them with the generic TRL stages of `training/` and serves `shoplab rewrite ...`.
"""

from training.beque.pipeline import RewritePipeline, RewritePipelineConfig

__all__ = ["RewritePipeline", "RewritePipelineConfig"]
