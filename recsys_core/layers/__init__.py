"""Layers shared across the zoo."""

from recsys_core.layers.mlp import mlp
from recsys_core.layers.transformer import Block, CausalTransformer, RMSNorm, init_weights, swiglu_hidden

__all__ = ["Block", "CausalTransformer", "RMSNorm", "init_weights", "mlp", "swiglu_hidden"]
