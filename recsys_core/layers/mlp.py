"""Small building blocks shared by the ranking and tokenizer models."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None, activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0, norm: bool = False) -> nn.Sequential:
    """Linear → (LayerNorm) → activation → dropout per hidden size, then an optional output layer."""
    layers: list[nn.Module] = []
    dim = in_dim
    for h in hidden:
        layers.append(nn.Linear(dim, h))
        if norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation())
        if dropout:
            layers.append(nn.Dropout(dropout))
        dim = h
    if out_dim is not None:
        layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)

