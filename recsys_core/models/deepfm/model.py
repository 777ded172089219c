"""DeepFM (Guo et al., IJCAI 2017) on the zoo's CTR batch contract.

FM (bias + first order + pairwise second order over all fields) plus a DNN on the concatenated field
embeddings (and dense features) share one embedding table per field (the zoo's `FeatureEmbedding`, with
first-order weights). With user histories, each
field's history embeddings (and first-order weights) are mean-pooled over the real behaviours and
enter as F extra fields, so the FM also models candidate × history-interest interactions. Per-user
fields (`user_fields`) are FM fields too, and so are `n_extra_fields` vectors a wrapper passes in
(`forward(batch, extra)`: CoCo's knowledge), which then interact with every other field.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import FeatureEmbedding, LegacyFieldTables, mlp
from recsys_core.registry import register_model


@register_model("deepfm", tasks="ctr")
class DeepFM(LegacyFieldTables, nn.Module):
    legacy_names = ((r"embeddings\.(\d+)\.weight", r"features.tables.\1.weight"),
                    (r"first_order\.(\d+)\.weight", r"features.first_order.\1.weight"),
                    (r"user_embeddings\.(\d+)\.weight", r"user_features.tables.\1.weight"),
                    (r"user_first_order\.(\d+)\.weight", r"user_features.first_order.\1.weight"))

    def __init__(self, field_vocab_sizes: Sequence[int], dense_dim: int = 0, max_len: int = 0, embed_dim: int = 16,
                 mlp_hidden: Sequence[int] = (200, 80), dropout: float = 0.0, user_field_vocab_sizes: Sequence[int] = (),
                 n_extra_fields: int = 0):
        super().__init__()
        self.field_vocab_sizes = list(field_vocab_sizes)
        self.uses_history = max_len > 0
        self.dense_dim = dense_dim
        self.features = FeatureEmbedding(self.field_vocab_sizes, embed_dim, first_order=True)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim, first_order=True)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense_linear = nn.Linear(dense_dim, 1, bias=False) if dense_dim else None
        self.embed_dim, self.n_extra_fields = embed_dim, n_extra_fields
        n_fields = (len(self.features) * (2 if self.uses_history else 1) + len(self.user_features) + n_extra_fields)
        self.dnn = mlp(n_fields * embed_dim + dense_dim, mlp_hidden, 1, dropout=dropout)

    def embed_user(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The user-field embeddings [B, U, k] (U = 0 when the model has no user fields)."""
        return self.user_features.of_batch(batch)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        """Click logits [B]; `extra` [B, n_extra_fields, embed_dim] side vectors (required when built with some)."""
        vectors, weights = self.features(batch["cand_fields"]), self.features.linear(batch["cand_fields"])
        if self.uses_history:
            if "hist_fields" not in batch:
                raise ValueError("this DeepFM was built for data with histories: the batch lacks `hist_fields`")
            hist = batch["hist_fields"]
            h_vectors, h_weights = self.features(hist), self.features.linear(hist)
            real = (hist > 0).any(-1).float()  # [B, T]
            count = real.sum(1).clamp(min=1.0)
            pooled = torch.einsum("bt,btfk->bfk", real, h_vectors) / count[:, None, None]
            pooled_w = torch.einsum("bt,btf->bf", real, h_weights) / count[:, None]
            vectors, weights = torch.cat([vectors, pooled], 1), torch.cat([weights, pooled_w], 1)
        if len(self.user_features):
            vectors = torch.cat([vectors, self.embed_user(batch)], 1)
            weights = torch.cat([weights, self.user_features.linear(batch["user_fields"])], 1)
        if self.n_extra_fields:
            if extra is None or extra.shape[1:] != (self.n_extra_fields, self.embed_dim):
                raise ValueError(f"this DeepFM expects extra [B, {self.n_extra_fields}, {self.embed_dim}] vectors")
            vectors = torch.cat([vectors, extra], 1)
        square_of_sum = vectors.sum(1).pow(2)
        sum_of_square = vectors.pow(2).sum(1)
        logit = self.bias + weights.sum(1) + 0.5 * (square_of_sum - sum_of_square).sum(-1)
        deep_in = [vectors.flatten(1)]
        if self.dense_dim:
            if "dense" not in batch:
                raise ValueError(f"this DeepFM expects {self.dense_dim} dense features: the batch lacks `dense`")
            logit = logit + self.dense_linear(batch["dense"]).squeeze(-1)
            deep_in.append(batch["dense"])
        return logit + self.dnn(torch.cat(deep_in, dim=-1)).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])
