"""GCL-MO (arXiv 2307.04322): graph contrastive learning with multiple objectives for e-commerce search.

One item embedding table serves two objectives that e-commerce search retrieval needs at once:

- **Personalization:** items a shopper clicks together are close. Positives for an anchor item are sampled
  from its neighbourhood in the homogeneous item graph (`recsys_core.data.item_graph`: co-clicks within a
  window, purchases weighted up); negatives are the batch's other positives plus `n_random` uniform items.
- **Relevance:** the item is close to the queries it answers: a query tower (frozen MiniLM of the query
  text → the projection titles share → residual MLP) against the item table, on long-tail queries with
  their gold products.

**Encoder:** every item's input is id + attribute fields (category, shop, brand, price bucket) + its frozen
MiniLM title vector, projected; `graph_layers` rounds of LightGCN propagation over the normalised item graph
(the mean of the layer outputs) spread behaviour to neighbours, so an item with few clicks borrows from the
items it is clicked with, and relevance learnt on one item reaches its neighbours; an MLP with a residual
and L2 normalisation give the table.

**Modified contrastive loss** (`contrastive: modified`): an anchor has several positives; the usual
multi-positive InfoNCE puts every positive in every other positive's denominator, so positives push each
other apart (the mutual suppression the paper removes). Here each positive is contrasted with the negatives
only: -log e^{s_p} / (e^{s_p} + Σ_negatives e^{s_n}). `contrastive: standard` is the usual loss (ablation).
The exact form of the paper's loss and of its relevance objective is not public: both are `[proposal]`.

**Serving:** the offline-to-online inverted table (`InvertedTable.from_vectors`): each item's top-K
neighbours by inner product, computed offline; online, a user's last clicks are looked up and merged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import init_weights, mlp
from recsys_core.registry import register_model

OBJECTIVES = ("personalization", "relevance")
CONTRASTIVE_LOSSES = ("modified", "standard")


def multi_positive_loss(logits: torch.Tensor, positive_columns: torch.Tensor, own: torch.Tensor,
                        valid: torch.Tensor, modified: bool = True) -> torch.Tensor:
    """Mean over an anchor's positives of -log p(positive), from logits [B, C] against C candidates.

    `positive_columns` [B, P]: the candidate column of each of the anchor's positives (-1 = no positive);
    `own` [B, C]: candidates that are one of the anchor's positives (or the anchor itself); `valid` [B, C]:
    candidates that may enter a denominator. `modified=True` contrasts a positive with non-own candidates
    only (no positive in another's denominator); `False` is the standard multi-positive InfoNCE, every valid
    candidate but the anchor in the denominator, the other positives included."""
    present = positive_columns >= 0
    pos_logits = logits.gather(1, positive_columns.clamp_min(0))
    if modified:
        negatives = logits.masked_fill(~(valid & ~own), -torch.inf).logsumexp(1, keepdim=True)
        log_denominator = torch.logaddexp(pos_logits, negatives)
    else:
        log_denominator = logits.masked_fill(~valid, -torch.inf).logsumexp(1, keepdim=True).expand_as(pos_logits)
    losses = (log_denominator - pos_logits)[present]
    return losses.mean() if losses.numel() else logits.sum() * 0.0


def text_projection_init(item_text_vectors: Any, query_dim: int, hidden: int, seed: int = 0) -> torch.Tensor:
    """The start of the text projection that queries and item titles share [hidden, query_dim]: the titles'
    top principal directions (a random Gaussian map for the rest, or all of it without titles). A query and a
    title then start at nearly their MiniLM cosine, so relevance starts close to zero-shot MiniLM and is
    refined: on the sandbox's long-tail queries, 128 principal directions keep valid NDCG@10 at 0.24 of
    MiniLM's 0.27, a random map 0.19 `[proposal]`."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(hidden, query_dim, generator=generator) * hidden ** -0.5
    if item_text_vectors is not None:
        titles = torch.as_tensor(np.asarray(item_text_vectors), dtype=torch.float32)
        titles = titles[titles.abs().sum(1) > 0]
        if len(titles) > 1:
            _, _, directions = torch.linalg.svd(titles - titles.mean(0), full_matrices=False)
            n = min(hidden, len(directions))
            weight[:n] = directions[:n]
    return weight


@register_model("gcl_mo", tasks="search_retrieval")
class GCLMO(nn.Module):
    def __init__(self, n_items: int, adjacency: torch.Tensor | None = None, item_attributes: Any = None,
                 n_attributes: int = 0, item_text_vectors: Any = None, query_dim: int = 384, hidden: int = 64,
                 graph_layers: int = 2, temperature: float = 0.1, objectives: list[str] | tuple[str, ...] = OBJECTIVES,
                 relevance_weight: float = 1.0, contrastive: str = "modified", n_random: int = 256,
                 use_id: bool = True, use_text: bool = True, own_text: bool = True, dropout: float = 0.1):
        super().__init__()
        objectives = tuple(objectives)
        if not objectives or set(objectives) - set(OBJECTIVES):
            raise ValueError(f"objectives must be a non-empty subset of {OBJECTIVES}, not {list(objectives)}")
        if contrastive not in CONTRASTIVE_LOSSES:
            raise ValueError(f"contrastive must be one of {CONTRASTIVE_LOSSES}, not {contrastive!r}")
        if graph_layers < 0 or temperature <= 0 or n_random < 0 or hidden < 1:
            raise ValueError("graph_layers >= 0, temperature > 0, n_random >= 0 and hidden >= 1 are required")
        self.n_items, self.graph_layers, self.temperature = n_items, graph_layers, temperature
        self.objectives, self.relevance_weight, self.contrastive = objectives, relevance_weight, contrastive
        self.n_random, self.own_text = n_random, own_text
        if adjacency is None:  # no graph: every item is isolated (propagation keeps only layer 0)
            adjacency = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                                                (n_items + 1, n_items + 1), check_invariants=True)
        self.register_buffer("adjacency", adjacency.coalesce().float(), persistent=False)
        attrs = np.zeros((n_items + 1, 1), dtype=np.int64) if item_attributes is None else np.asarray(item_attributes)
        self.register_buffer("item_attributes", torch.as_tensor(attrs, dtype=torch.long), persistent=False)
        self.id_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0) if use_id else None
        self.attr_emb = nn.Embedding(max(n_attributes, int(attrs.max(initial=0))) + 1, hidden, padding_idx=0)
        self.use_item_text = bool(use_text and item_text_vectors is not None)
        if self.use_item_text:
            self.register_buffer("item_text", torch.as_tensor(np.asarray(item_text_vectors), dtype=torch.float32),
                                 persistent=False)
        self.item_mlp = mlp(hidden, [2 * hidden], hidden, dropout=dropout)
        self.query_mlp = mlp(hidden, [2 * hidden], hidden, dropout=dropout)
        init_weights(self)
        self.text_proj = nn.Linear(query_dim, hidden, bias=False)
        self.text_proj.weight.data.copy_(text_projection_init(item_text_vectors if self.use_item_text else None,
                                                              query_dim, hidden))

    # -- towers ---------------------------------------------------------------------------------------
    def node_inputs(self) -> torch.Tensor:
        """Every item's input [n_items + 1, hidden]: id + mean of its attribute fields + projected title."""
        attrs = self.item_attributes
        present = (attrs > 0).unsqueeze(-1).float()
        x = (self.attr_emb(attrs) * present).sum(-2) / present.sum(-2).clamp_min(1.0)
        if self.id_emb is not None:
            x = x + self.id_emb.weight
        if self.use_item_text:
            x = x + self.text_proj(self.item_text)
        return x

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """LightGCN: the mean of x, Âx, Â²x, ... over `graph_layers` rounds."""
        layers, h = [x], x
        for _ in range(self.graph_layers):
            h = torch.sparse.mm(self.adjacency, h)
            layers.append(h)
        return torch.stack(layers).mean(0)

    def item_table(self) -> torch.Tensor:
        """L2-normalised item vectors [n_items + 1, hidden] (row 0, padding, is 0). With `own_text`, the item's
        own projected title is added again after propagation, so neighbours' titles cannot drown the words a
        query must match (relevance) while behaviour still comes through the graph `[proposal]`."""
        h = self.propagate(self.node_inputs())
        if self.own_text and self.use_item_text:
            h = h + self.text_proj(self.item_text)
        table = F.normalize(h + self.item_mlp(h), dim=-1)
        return table * (torch.arange(self.n_items + 1, device=table.device) > 0).unsqueeze(-1).float()

    def item_vectors(self) -> torch.Tensor:
        return self.item_table()

    def query_vectors(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """The query tower: frozen MiniLM query vectors [Q, query_dim] → the shared text projection →
        residual MLP → L2-normalised [Q, hidden]."""
        x = self.text_proj(text_vectors.float())
        return F.normalize(x + self.query_mlp(x), dim=-1)

    def user_vectors(self, triggers: torch.Tensor, decay: float = 0.7, table: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """A user as the recency-weighted mean of their trigger items' vectors ([B, T] left-padded ids)."""
        table = self.item_table() if table is None else table
        age = torch.arange(triggers.shape[1] - 1, -1, -1, device=triggers.device, dtype=torch.float32)
        weights = (decay ** age).unsqueeze(0) * (triggers > 0).float()
        return F.normalize((table[triggers] * weights.unsqueeze(-1)).sum(1), dim=-1)

    # -- objectives -----------------------------------------------------------------------------------
    def _random_items(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randint(1, self.n_items + 1, (n,), device=device)

    def personalization_loss(self, table: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor
                             ) -> torch.Tensor:
        """Anchors [B] against their graph positives [B, P] (0 = none), the batch's other positives and
        `n_random` uniform items."""
        b, p = positives.shape
        candidates = torch.cat([positives.reshape(-1), self._random_items(self.n_random, anchors.device)])
        logits = table[anchors] @ table[candidates].T / self.temperature
        own = (candidates.view(1, 1, -1) == positives.unsqueeze(-1)).any(1) | (candidates[None] == anchors[:, None])
        valid = (candidates[None] > 0) & (candidates[None] != anchors[:, None])
        columns = torch.arange(b * p, device=anchors.device).view(b, p)
        columns = torch.where(positives > 0, columns, torch.full_like(columns, -1))
        return multi_positive_loss(logits, columns, own, valid, modified=self.contrastive == "modified")

    def relevance_loss(self, table: torch.Tensor, query_text: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """Queries [Q, query_dim] against their gold items [Q] (in-batch and `n_random` uniform negatives)."""
        candidates = torch.cat([gold, self._random_items(self.n_random, gold.device)])
        logits = self.query_vectors(query_text) @ table[candidates].T / self.temperature
        own = candidates[None] == gold[:, None]
        columns = torch.arange(len(gold), device=gold.device).unsqueeze(1)
        valid = torch.ones_like(own)
        return multi_positive_loss(logits, columns, own, valid, modified=self.contrastive == "modified")

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.item_table()
        total = table.sum() * 0.0
        if "personalization" in self.objectives:
            total = total + self.personalization_loss(table, batch["anchors"], batch["positives"])
        if "relevance" in self.objectives and "query_text" in batch:
            total = total + self.relevance_weight * self.relevance_loss(table, batch["query_text"], batch["gold"])
        return total
