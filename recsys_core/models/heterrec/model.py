"""HeterRec (arXiv 2503.01469): heterogeneous token flattening, a hierarchical causal transformer and a
listwise multi-step prediction objective, for next-item recommendation with full ranking.

- **Heterogeneous Token Flattening Layer (HTFL).** An item is not one id vector but a set of tokens: its id
  token plus one token per attribute (Amazon: category/brand attribute ids of the S3-Rec files; MovieLens:
  each genre and the 5-year release bucket), each from its own vocabulary plus a learned token-slot
  embedding, so a sequence of T items becomes T × n_tokens heterogeneous tokens. `heterogeneous: false`
  keeps the id token only (the SASRec input).
- **Hierarchical Causal Transformer (HCT).** Token level: a bidirectional transformer layer inside each item
  over its own tokens `[proposal]` (the paper's exact token-level masking is not public; attention inside the
  item keeps the cost at T·n² instead of (T·n)²), pooled by a masked mean into one vector per item. Item level:
  the zoo's causal transformer over those item vectors. Candidates are scored against the same token-level
  encoding of every catalogue item, so an item's attributes shape both sides. `token_attention: false` pools
  the raw token embeddings (no token-level attention).
- **Listwise Multi-step Prediction (LMP)** `[proposal]`: the state at position t is trained to rank each of
  the next `predict_steps` items first among all items (full-softmax cross-entropy per step), step k weighted
  by `step_decay`^(k−1) and the weights normalised to sum to 1. `predict_steps: 1` is the usual next-item loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import CausalTransformer, init_weights
from recsys_core.layers.field_transformer import TokenEncoderLayer
from recsys_core.registry import register_model


def item_token_table(item_attributes: list[list[int]], max_attributes: int) -> np.ndarray:
    """[n_items + 1, 1 + max_attributes]: the item index, then its first `max_attributes` attribute ids (0 = none)."""
    table = np.zeros((len(item_attributes), 1 + max_attributes), dtype=np.int64)
    table[:, 0] = np.arange(len(item_attributes))
    for item, attrs in enumerate(item_attributes):
        kept = list(dict.fromkeys(attrs))[:max_attributes]
        table[item, 1:1 + len(kept)] = kept
    table[0] = 0
    return table


@register_model("heterrec", tasks="next_item")
class HeterRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, item_tokens: Any, n_attributes: int, hidden: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.2, heterogeneous: bool = True,
                 token_attention: bool = True, predict_steps: int = 3, step_decay: float = 0.5,
                 max_attributes: int = 6):
        super().__init__()
        del max_attributes  # used by data_inputs only
        if predict_steps < 1 or not 0 < step_decay <= 1:
            raise ValueError("predict_steps must be >= 1 and step_decay in (0, 1]")
        tokens = torch.as_tensor(np.asarray(item_tokens), dtype=torch.long)
        if tokens.shape[0] != n_items + 1:
            raise ValueError(f"item_tokens must have n_items + 1 = {n_items + 1} rows, got {tokens.shape[0]}")
        if not heterogeneous:
            tokens = tokens[:, :1]
        self.register_buffer("item_tokens", tokens, persistent=False)
        self.n_items, self.predict_steps, self.step_decay = n_items, predict_steps, step_decay
        self.token_attention = token_attention
        self.id_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.attr_emb = nn.Embedding(n_attributes + 1, hidden, padding_idx=0)
        self.slot_emb = nn.Embedding(tokens.shape[1], hidden)
        self.token_layer = TokenEncoderLayer(hidden, heads, dropout) if token_attention else None
        self.encoder = CausalTransformer(hidden, layers, heads, max_len, dropout)
        self.emb_dropout = nn.Dropout(dropout)
        init_weights(self)

    @staticmethod
    def data_inputs(data, params: dict[str, Any]) -> dict[str, Any]:
        """The item token table (HTFL) from the data's item attributes."""
        return {"item_tokens": item_token_table(data.item_attributes, int(params.get("max_attributes", 6))),
                "n_attributes": int(data.n_attributes)}

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors [..., hidden] of item indices [...] from their heterogeneous tokens (HTFL + token level)."""
        tok = self.item_tokens[items]  # [..., n]
        x = torch.cat([self.id_emb(tok[..., :1]), self.attr_emb(tok[..., 1:])], -2) + self.slot_emb.weight
        real = tok > 0
        real[..., 0] = items > 0
        if self.token_layer is not None:
            shape = x.shape
            flat, pad = x.reshape(-1, shape[-2], shape[-1]), ~real.reshape(-1, shape[-2])
            pad[:, 0] = False  # a padded item keeps one token visible: no all-masked attention row
            x = self.token_layer(flat, pad)[0].reshape(shape)
        weights = real.unsqueeze(-1).float()
        return (x * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)

    def catalogue(self, device: torch.device) -> torch.Tensor:
        """Every item's vector [n_items + 1, hidden] (row 0, padding, is 0): a batch's positions index into it,
        so each item's tokens go through the token level once per step, not once per occurrence."""
        return self.encode_items(torch.arange(self.n_items + 1, device=device))

    def hidden_states(self, input_ids: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        catalogue = self.catalogue(input_ids.device) if catalogue is None else catalogue
        x = self.emb_dropout(catalogue[input_ids])
        return self.encoder(x, padding_mask=input_ids > 0)

    def step_weights(self) -> torch.Tensor:
        w = self.step_decay ** torch.arange(self.predict_steps, dtype=torch.float)
        return w / w.sum()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch["input_ids"], batch["targets"]  # targets[:, i] is the item after input i
        catalogue = self.catalogue(inputs.device)
        h = self.hidden_states(inputs, catalogue)
        real = inputs > 0
        rows, cols = real.nonzero(as_tuple=True)
        # one softmax over the catalogue per real position, shared by every step ahead (padding never ranked)
        logits = h[rows, cols] @ catalogue.T
        log_norm = torch.logsumexp(logits[:, 1:], -1)
        ahead = F.pad(targets, (0, self.predict_steps))  # positions past the end have no target (0)
        # the state at i also ranks the item k steps further: targets[:, i + k]
        wanted = torch.stack([ahead[rows, cols + k] for k in range(self.predict_steps)], 1)  # [P, K]
        picked = logits.gather(1, wanted)  # one gather for every step (column 0 is masked out below)
        keep = (wanted > 0).float()
        nll = (log_norm[:, None] - picked) * keep
        per_step = nll.sum(0) / keep.sum(0).clamp_min(1.0)
        return (per_step * self.step_weights().to(per_step.device)).sum()

    def score_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        catalogue = self.catalogue(input_ids.device)
        return self.hidden_states(input_ids, catalogue)[:, -1] @ catalogue.T
