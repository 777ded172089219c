"""Transformers over a CTR sample's feature fields, shared by the token-based and generative CTR models.

`TokenEncoderLayer`: a pre-norm bidirectional transformer layer (multi-head attention + GELU MLP) that can
also return how much attention the first token ([CLS]) pays to every token (STORE's token filter reads it).

`SampleFieldEncoder`: a sample as tokens. The *sample fields* are the user fields (`user_fields`, where the
data has them) followed by the candidate's item fields (`cand_fields`); each is one token (its field
embedding projected to d_model, plus a learned per-field position). The user's history enters as context
tokens that are never masked nor generated: per item field, the mean of the history's field vectors, and
the last behaviour's field vectors. A [CLS] token leads. Generative heads predict a sample field's id from
its output state with the field's own embedding table as the output layer (tied), so "which id fits here"
and "what this id means" share one space; SGCTR and DGenCTR are built on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers.features import FeatureEmbedding


class TokenEncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, ffn_mult: int = 4):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * d_model, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None, cls_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, N, d]; padding [B, N] True = a padded token. Returns (x, attention of token 0 over the N
        tokens [B, N], averaged over heads, when `cls_weights`)."""
        h = self.attn_norm(x)
        out, _ = self.attn(h, h, h, key_padding_mask=padding, need_weights=False)
        weights = self._cls_attention(h, padding) if cls_weights else None
        x = x + self.dropout(out)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights

    def _cls_attention(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """Token 0's attention over the tokens [B, N], averaged over heads: the same weights the layer uses,
        computed for that one query only (asking the attention for its weights would materialise every
        query's row and leave the fused kernel: slower than the filter saves)."""
        attn = self.attn
        d, heads = attn.embed_dim, attn.num_heads
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(h[:, :1], w[:d], bias[:d]).view(len(h), 1, heads, d // heads).transpose(1, 2)
        k = F.linear(h, w[d:2 * d], bias[d:2 * d]).view(len(h), -1, heads, d // heads).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(d // heads)  # [B, H, N]
        if padding is not None:
            scores = scores.masked_fill(padding[:, None, :], float("-inf"))
        return scores.softmax(-1).mean(1)


class SampleFieldEncoder(nn.Module):
    """See the module docstring. `field_vectors(batch)` gives the sample fields' input vectors [B, S, k]
    (a model may replace some: a mask, a refined vector), `encode(vectors, batch)` the output states
    [B, 1 + S + 2F, d] (0 = [CLS], 1..S = the sample fields, then the history context)."""

    def __init__(self, field_vocab_sizes: Sequence[int], user_field_vocab_sizes: Sequence[int] = (),
                 embed_dim: int = 16, d_model: int = 64, layers: int = 2, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.item_features = FeatureEmbedding(list(field_vocab_sizes), embed_dim)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        self.n_user, self.n_item = len(self.user_features), len(self.item_features)
        self.n_sample_fields = self.n_user + self.n_item
        self.embed_dim, self.d_model = embed_dim, d_model
        self.input = nn.Linear(embed_dim, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.positions = nn.Parameter(torch.randn(1, 1 + self.n_sample_fields + 2 * self.n_item, d_model) * 0.02)
        self.layers = nn.ModuleList(TokenEncoderLayer(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, embed_dim)  # generative heads: state -> embedding space (tied tables)

    # -- the sample's fields --------------------------------------------------------------------
    def sample_ids(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Ids of the sample fields [B, S]: user fields, then the candidate's item fields."""
        cand = batch["cand_fields"]
        if not self.n_user:
            return cand
        if "user_fields" not in batch:
            raise ValueError("this model was built with user fields: the batch lacks `user_fields`")
        return torch.cat([batch["user_fields"], cand], 1)

    def table(self, field: int) -> nn.Embedding:
        """The embedding table of sample field `field` (0..S-1)."""
        if field < self.n_user:
            return self.user_features.tables[field]
        return self.item_features.tables[field - self.n_user]

    def field_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Input vectors [B, S, k] of sample-field ids [B, S]."""
        if ids.shape[-1] != self.n_sample_fields:
            raise ValueError(f"expected {self.n_sample_fields} sample fields, got {ids.shape[-1]}")
        return torch.cat([self.user_features(ids[:, :self.n_user]), self.item_features(ids[:, self.n_user:])], 1)

    def context_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """History context [B, 2F, k]: mean of the history's field vectors, then the last behaviour's."""
        if "hist_fields" not in batch:
            raise ValueError("this model reads user histories: the batch lacks `hist_fields`")
        hist = batch["hist_fields"]
        vectors = self.item_features(hist)  # [B, T, F, k]
        real = (hist > 0).any(-1).float()
        mean = torch.einsum("bt,btfk->bfk", real, vectors) / real.sum(1).clamp(min=1.0)[:, None, None]
        return torch.cat([mean, vectors[:, -1]], 1)  # histories are left-padded: the last slot is the latest

    # -- encoder and heads ----------------------------------------------------------------------
    def encode(self, vectors: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.cat([vectors, self.context_vectors(batch)], 1)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), self.input(tokens)], 1) + self.positions
        for layer in self.layers:
            x, _ = layer(x)
        return self.norm(x)

    def field_logits(self, states: torch.Tensor, field: int) -> torch.Tensor:
        """Logits over field `field`'s vocabulary [B, V] from its output states [B, d] (id 0 excluded)."""
        logits = self.output(states) @ self.table(field).weight.T
        return logits.index_fill(-1, torch.zeros(1, dtype=torch.long, device=logits.device), float("-inf"))

    def generative_loss(self, states: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the masked sample fields' ids (unknown ids 0 are not targets);
        `weights` [B] reweights samples (the diffusion ELBO's 1/t)."""
        total, count = states.new_zeros(()), states.new_zeros(())
        for field in range(self.n_sample_fields):
            rows = masked[:, field] & (ids[:, field] > 0)
            if not rows.any():
                continue
            ce = F.cross_entropy(self.field_logits(states[rows, 1 + field], field), ids[rows, field], reduction="none")
            w = weights[rows] if weights is not None else torch.ones_like(ce)
            total, count = total + (ce * w).sum(), count + rows.sum()
        return total / count.clamp(min=1.0)
