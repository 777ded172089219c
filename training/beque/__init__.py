"""BEQUE (long-tail query rewriting) end to end: data -> SFT -> offline feedback -> PRO / DPO -> eval.

The rewriter's parts (data, rules, the model, retrieval feedback, metrics) live in `rewrite/`; this
package trains them with the generic TRL stages of `training/` and serves `shoplab rewrite ...`.
"""

from shoplab_core.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "training.beque.pipeline": ["RewritePipeline", "RewritePipelineConfig"],
})
