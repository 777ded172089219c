"""SASRec-style next-item model (Kang & McAuley 2018) on the shared causal transformer, trained with
the full softmax over all items (cross-entropy), the stronger modern recipe for SASRec."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import CausalTransformer, init_weights
from recsys_core.registry import register_model


@register_model("sasrec", tasks="next_item")
class SASRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.encoder = CausalTransformer(hidden, layers, heads, max_len, dropout)
        self.emb_dropout = nn.Dropout(dropout)
        init_weights(self)

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb_dropout(self.item_emb(input_ids))
        return self.encoder(x, padding_mask=input_ids > 0)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.hidden_states(batch["input_ids"])
        targets = batch["targets"]
        keep = targets > 0
        logits = h[keep] @ self.item_emb.weight.T
        return F.cross_entropy(logits, targets[keep])

    def score_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores of every item (column = item index) as the next item after each history."""
        return self.hidden_states(input_ids)[:, -1] @ self.item_emb.weight.T

    def item_embeddings(self) -> torch.Tensor:
        """Collaborative item vectors (row = item index), the behaviour modality for tokenizers."""
        return self.item_emb.weight.detach()
