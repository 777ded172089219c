"""`load_rewriter`: a query rewriter from a spec, `rule` or a trained stage / adapter / model folder.

Its own module so that the package's `__init__`, the agent tool and the search's rewrite stage
(entry point `shoplab.query_rewriters`) all import it without importing one another.
"""

from __future__ import annotations

from rewrite.model import RewriteModel
from rewrite.rules import RuleRewriter


def load_rewriter(spec: str, **kwargs):
    """`rule`, or a folder: a trained stage (stage.json), a LoRA adapter, or a model."""
    if spec == "rule":
        return RuleRewriter()
    return RewriteModel.load(spec, **kwargs)
