"""Two-tower embedding-based retrieval: the base that ESANS and CSMF build on.

- **Item tower:** id embedding + mean of attribute embeddings (genres, year bucket) + the frozen MiniLM
  vector of the title, projected (`use_text`); → MLP → L2-normalised vector. An item's vector depends on the
  item alone, so the whole catalogue is embedded offline into an index.
- **User tower:** the shared causal transformer over the history's item-tower inputs; the last position's
  output, projected and L2-normalised, is the user vector (every earlier position is a training query).
- **Positives:** every next item, or with `min_stars` only the ones rated that high (explicit-feedback data:
  the conversion objective of a click → conversion cascade).
- **Loss:** sampled softmax over the positive and `n_negatives` sampled items per query, cosine scores over
  a temperature; a sampled negative equal to the positive is masked (an accidental hit is not a negative).

Negative samplers (`negatives`), the baselines ESANS is compared against:
- `uniform`: items drawn uniformly from the catalogue.
- `in_batch`: the other queries' positives in the batch (popularity-distributed, the cheapest), with the
  logQ correction (scores minus log of the item's sampling probability; Yi et al. 2019) so that popular
  items are not over-penalised.
- `hard`: `hard_share` of the negatives drawn from the `hard_pool` items the current model scores highest
  for the query after its top `hard_skip` (the positive excluded), the rest uniform. Skipping the very top
  follows Facebook's EBR (Huang et al. 2020: the highest-ranked non-clicks are too often relevant); with
  `hard_skip: 0` the first ML-1M run collapsed (valid NDCG@10 0.008 after 2 epochs). On ML-1M's 3.9k movies
  the pool is exact; on a large catalogue it would come from the ANN index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.data.content import cached_minilm_embeddings
from recsys_core.layers import CausalTransformer, init_weights, mlp
from recsys_core.registry import register_model

NEGATIVE_SAMPLERS = ("uniform", "in_batch", "hard")


def attribute_table(item_attributes: list[list[int]], max_attributes: int) -> np.ndarray:
    """[n_items + 1, max_attributes] attribute ids per item (0 = none)."""
    table = np.zeros((len(item_attributes), max_attributes), dtype=np.int64)
    for item, attrs in enumerate(item_attributes):
        attrs = list(attrs)[:max_attributes]
        table[item, :len(attrs)] = attrs
    return table


@register_model("two_tower", tasks="retrieval")
class TwoTower(nn.Module):
    def __init__(self, n_items: int, max_len: int, item_attributes: Any = None, n_attributes: int = 0,
                 item_text_vectors: Any = None, item_popularity: Any = None, hidden: int = 64, layers: int = 2,
                 heads: int = 2, dropout: float = 0.2, temperature: float = 0.1, negatives: str = "uniform",
                 n_negatives: int = 32, hard_pool: int = 50, hard_skip: int = 10, hard_share: float = 0.5,
                 use_text: bool = True,
                 min_stars: float = 0.0, max_attributes: int = 8, text_cache: str | None = "runs/cache"):
        super().__init__()
        del max_attributes, text_cache  # used by data_inputs only
        if negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negatives must be one of {NEGATIVE_SAMPLERS}, not {negatives!r}")
        if n_negatives < 1 or temperature <= 0 or not 0 <= hard_share <= 1:
            raise ValueError("n_negatives >= 1, temperature > 0 and hard_share in [0, 1] are required")
        self.n_items, self.temperature, self.negatives, self.min_stars = n_items, temperature, negatives, min_stars
        self.n_negatives, self.hard_share = n_negatives, hard_share
        self.hard_skip = min(hard_skip, max(0, n_items - 2))
        self.hard_pool = max(1, min(hard_pool, n_items - 1 - self.hard_skip))
        attrs = np.zeros((n_items + 1, 1), dtype=np.int64) if item_attributes is None else np.asarray(item_attributes)
        self.register_buffer("item_attributes", torch.as_tensor(attrs, dtype=torch.long), persistent=False)
        popularity = np.ones(n_items + 1) if item_popularity is None else np.asarray(item_popularity, np.float64)
        popularity = np.maximum(popularity, 1.0)
        popularity[0] = 0.0
        self.register_buffer("log_q", torch.as_tensor(np.log(np.maximum(popularity / popularity.sum(), 1e-12)),
                                                      dtype=torch.float32), persistent=False)
        self.id_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.attr_emb = nn.Embedding(max(n_attributes, int(attrs.max(initial=0))) + 1, hidden, padding_idx=0)
        self.text_proj: nn.Module | None = None
        if use_text and item_text_vectors is not None:
            text = torch.as_tensor(np.asarray(item_text_vectors), dtype=torch.float32)
            self.register_buffer("item_text", text, persistent=False)
            self.text_proj = nn.Linear(text.shape[1], hidden, bias=False)
        self.item_mlp = mlp(hidden, [2 * hidden], hidden)
        self.encoder = CausalTransformer(hidden, layers, heads, max_len, dropout)
        self.user_out = nn.Linear(hidden, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        init_weights(self)

    @staticmethod
    def data_inputs(data, params: dict[str, Any]) -> dict[str, Any]:
        """Attribute table, MiniLM title vectors (when the data has text) and training popularity."""
        out: dict[str, Any] = {"item_attributes": attribute_table(data.item_attributes,
                                                                  int(params.get("max_attributes", 8))),
                               "n_attributes": int(data.n_attributes),
                               "item_popularity": data.item_counts("train")}
        if params.get("use_text", True) and data.item_text is not None:
            vectors = cached_minilm_embeddings(list(data.item_text), params.get("text_cache", "runs/cache"))
            vectors[0] = 0.0
            out["item_text_vectors"] = vectors
        return out

    # -- towers -------------------------------------------------------------------------------------
    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """The item tower's input [..., hidden]: id + attributes (+ text)."""
        attrs = self.item_attributes[items]
        present = (attrs > 0).unsqueeze(-1).float()
        x = self.id_emb(items) + (self.attr_emb(attrs) * present).sum(-2) / present.sum(-2).clamp_min(1.0)
        if self.text_proj is not None:
            x = x + self.text_proj(self.item_text[items])
        return x

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """L2-normalised item vectors [..., hidden] (padding → 0)."""
        x = self.item_inputs(items)
        vectors = F.normalize(x + self.item_mlp(x), dim=-1)
        return vectors * (items > 0).unsqueeze(-1).float()

    def encode_unique(self, items: torch.Tensor) -> torch.Tensor:
        """`encode_items` computed once per distinct item (a batch samples the same items many times)."""
        unique, inverse = torch.unique(items, return_inverse=True)
        return self.encode_items(unique)[inverse]

    def user_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised query vectors at every position [B, T, hidden]."""
        x = self.emb_dropout(self.item_inputs(input_ids)) * (input_ids > 0).unsqueeze(-1).float()
        h = self.encoder(x, padding_mask=input_ids > 0)
        return F.normalize(self.user_out(h), dim=-1)

    def user_vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.user_states(input_ids)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        """The catalogue table [n_items + 1, hidden] (row 0, padding, is 0): what the index stores."""
        items = torch.arange(self.n_items + 1, device=self.id_emb.weight.device)
        return torch.cat([self.encode_items(chunk) for chunk in items.split(8192)])

    # -- negatives ----------------------------------------------------------------------------------
    def uniform_items(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(1, self.n_items + 1, shape, device=self.id_emb.weight.device)

    def sample_negatives(self, queries: torch.Tensor, positives: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(negative item ids [P, N], their log sampling probability [P, N] when it is not uniform, else None)
        for P queries and their positives."""
        n, p = self.n_negatives, len(positives)
        if self.negatives == "in_batch":
            negatives = positives[torch.randint(0, p, (p, n), device=positives.device)]
            return negatives, self.log_q[negatives]
        if self.negatives == "hard":
            n_hard = round(n * self.hard_share)
            with torch.no_grad():
                scores = queries.detach() @ self.item_vectors().T
                scores[:, 0] = -torch.inf
                scores.scatter_(1, positives[:, None], -torch.inf)
                pool = scores.topk(self.hard_skip + self.hard_pool, dim=1).indices[:, self.hard_skip:]
            hard = pool.gather(1, torch.randint(0, self.hard_pool, (p, n_hard), device=pool.device))
            return torch.cat([hard, self.uniform_items((p, n - n_hard))], 1), None
        return self.uniform_items((p, n)), None

    def sampled_logits(self, queries: torch.Tensor, positives: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [P, 1 + N'] with the positive in column 0, mask of valid columns [P, 1 + N'])."""
        negatives, log_q = self.sample_negatives(queries, positives)
        pos_vec, neg_vec = self.encode_unique(positives), self.encode_unique(negatives)
        logits = torch.cat([(queries * pos_vec).sum(-1, keepdim=True),
                            torch.einsum("pd,pnd->pn", queries, neg_vec)], 1) / self.temperature
        if log_q is not None:  # logQ correction: score - log q(item), the positive's included
            logits = logits - torch.cat([self.log_q[positives][:, None], log_q], 1)
        valid = torch.cat([torch.ones_like(positives[:, None], dtype=torch.bool),
                           self.negative_mask(positives, negatives)], 1)
        extra = self.extra_negatives(queries, pos_vec, neg_vec, valid[:, 1:])
        if extra is not None:
            logits, valid = torch.cat([logits, extra[0] / self.temperature], 1), torch.cat([valid, extra[1]], 1)
        return logits, valid

    def negative_mask(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """[P, N] True where a sampled negative counts (the base drops only accidental hits of the positive)."""
        return negatives != positives[:, None]

    def extra_negatives(self, queries: torch.Tensor, pos_vec: torch.Tensor, neg_vec: torch.Tensor,
                        neg_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Scores [P, M] of negatives that are not catalogue items (ESANS's virtual ones) and their mask."""
        return None

    def query_targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(query vectors [P, hidden], positive items [P]) of the batch's predicted positions."""
        h = self.user_states(batch["input_ids"])
        keep = batch["targets"] > 0
        if self.min_stars > 0:  # a conversion objective: only targets rated >= min_stars are positives
            keep &= batch["target_stars"] >= self.min_stars
        return h[keep], batch["targets"][keep]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries, positives = self.query_targets(batch)
        logits, valid = self.sampled_logits(queries, positives)
        return F.cross_entropy(logits.masked_fill(~valid, -torch.inf), torch.zeros_like(positives))
