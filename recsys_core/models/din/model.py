"""Deep Interest Network (Zhou et al., KDD 2018) on the zoo's CTR batch contract.

The candidate attends over the user's history with DIN's local activation unit: an MLP on
[h, c, h − c, h ⊙ c] gives one unnormalised weight per behaviour (no softmax, as in the paper, so
the pooled vector keeps the intensity of interest), padded behaviours weigh 0. The pooled interest
and the candidate go through an MLP (200-80-1). An item is the concatenation of its field
embeddings (item id, category, ...). Activations: Dice (the paper's) or PReLU. With per-user fields
(`user_fields`, MovieLens' age, gender, ...) their embeddings join the MLP input, and so do
`n_extra_fields` vectors a wrapper passes in (`forward(batch, extra)`: CoCo's knowledge).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import FeatureEmbedding, LegacyFieldTables
from recsys_core.registry import register_model


class Dice(nn.Module):
    """DIN's data-adaptive activation: p(x)·x + (1 − p(x))·α·x with p = sigmoid(batch-normalised x).
    Statistics are taken over every leading dimension; a batch of one normalises to 0 instead of failing."""

    def __init__(self, dim: int, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.eps, self.momentum = eps, momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.training:
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x


def activation_layer(name: str, dim: int) -> nn.Module:
    if name == "dice":
        return Dice(dim)
    if name == "prelu":
        return nn.PReLU(dim)
    raise ValueError(f"unknown activation {name!r} (dice | prelu)")


def din_mlp(in_dim: int, hidden: Sequence[int], activation: str, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), activation_layer(activation, h)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = h
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


@register_model("din", tasks="ctr")
class DIN(LegacyFieldTables, nn.Module):
    legacy_names = ((r"embeddings\.(\d+)\.weight", r"features.tables.\1.weight"),
                    (r"user_embeddings\.(\d+)\.weight", r"user_features.tables.\1.weight"))

    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0, embed_dim: int = 16,
                 attention_hidden: Sequence[int] = (80, 40), mlp_hidden: Sequence[int] = (200, 80),
                 activation: str = "dice", dropout: float = 0.0, user_field_vocab_sizes: Sequence[int] = (),
                 n_extra_fields: int = 0):
        super().__init__()
        if max_len <= 0:
            raise ValueError("DIN needs user behaviour histories (hist_fields); this data has none "
                             "(data.kind ctr_sample): use deepfm for history-free CTR samples")
        self.field_vocab_sizes = list(field_vocab_sizes)
        self.features = FeatureEmbedding(self.field_vocab_sizes, embed_dim)
        item_dim = embed_dim * len(self.field_vocab_sizes)
        self.attention = din_mlp(4 * item_dim, attention_hidden, activation)
        self.dense_dim = dense_dim
        self.embed_dim = embed_dim
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        self.n_extra_fields = n_extra_fields
        side_dim = embed_dim * (len(self.user_features) + n_extra_fields)
        self.head = din_mlp(2 * item_dim + dense_dim + side_dim, mlp_hidden, activation, dropout)

    def embed(self, fields: torch.Tensor) -> torch.Tensor:
        """An item as the concatenation of its field embeddings: [..., F·k]."""
        return self.features.flat(fields)

    def embed_user(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The user-field embeddings [B, U, k] (U = 0 when the model has no user fields)."""
        return self.user_features.of_batch(batch)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits [B]; `extra` [B, n_extra_fields, embed_dim] side vectors (required when built with some)."""
        if "hist_fields" not in batch:
            raise ValueError("DIN needs `hist_fields` (user histories) in the batch")
        hist, cand = self.embed(batch["hist_fields"]), self.embed(batch["cand_fields"])
        mask = (batch["hist_fields"] > 0).any(-1)
        c = cand.unsqueeze(1).expand_as(hist)
        weights = self.attention(torch.cat([hist, c, hist - c, hist * c], dim=-1)).squeeze(-1)
        interest = (weights * mask).unsqueeze(-1).mul(hist).sum(1)
        parts = [interest, cand] + ([batch["dense"]] if self.dense_dim else []) + [self.embed_user(batch).flatten(1)]
        if self.n_extra_fields:
            if extra is None or extra.shape[1:] != (self.n_extra_fields, self.embed_dim):
                raise ValueError(f"this DIN expects extra [B, {self.n_extra_fields}, {self.embed_dim}] vectors")
            parts.append(extra.flatten(1))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])
