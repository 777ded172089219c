"""Layers shared across the zoo."""

from recsys_core.layers.attention import masked_target_attention
from recsys_core.layers.features import FeatureEmbedding, FieldSpec, LegacyFieldTables, field_specs
from recsys_core.layers.mlp import mlp
from recsys_core.layers.transformer import Block, CausalTransformer, RMSNorm, init_weights, swiglu_hidden

__all__ = ["masked_target_attention", "Block", "CausalTransformer", "FeatureEmbedding", "FieldSpec", "LegacyFieldTables", "RMSNorm", "field_specs", "init_weights", "mlp",
           "swiglu_hidden"]

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
