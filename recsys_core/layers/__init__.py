"""Layers shared across the zoo."""

from recsys_core.layers.mlp import mlp, user_field_embeddings
from recsys_core.layers.transformer import Block, CausalTransformer, RMSNorm, init_weights, swiglu_hidden

__all__ = ["Block", "CausalTransformer", "RMSNorm", "init_weights", "mlp", "swiglu_hidden", "user_field_embeddings"]

from recsys_core.layers.quantize import (  # noqa: E402
    Codebook,
    ResidualQuantizer,
    SemanticIdTokenizer,
    cross_orthogonality,
    info_nce,
    kmeans,
    mutual_orthogonality,
)

__all__ += ["Codebook", "ResidualQuantizer", "SemanticIdTokenizer", "cross_orthogonality", "info_nce", "kmeans",
            "mutual_orthogonality"]
