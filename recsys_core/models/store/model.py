"""STORE: a token-based ranking framework (arXiv 2511.18805). Its equations are not public; the choices
below are ours and marked [proposal].

A sample becomes tokens: [CLS], the sample fields (user fields, then the candidate's item fields) and one
token per history behaviour. Three mechanisms, each switchable for its ablation:

- **Semantic tokenization** (`semantic_tokens`) [proposal]: every field whose vocabulary has at least
  `tokenize_min_vocab` ids (user id, item id, zip) is decomposed into `code_levels` tokens from a compact,
  stable codebook instead of one sparse id embedding. The codes are computed once from the training data
  before training (`data_inputs`): each id's behaviour vector (its row of the id × counterpart
  co-occurrence matrix of the training clicks: items × users for the item id, values × items for a user
  field; square-rooted, rows L2-normalised) is reduced by a truncated SVD to `svd_dim` dimensions and
  quantised by residual k-means (`code_levels` levels × `codebook_size` codes, fixed seed). Ids never
  clicked in training get code 0 (unknown). So an id's capacity is shared with the ids that behave like it,
  and a rare id is as well represented as its neighbourhood. Off: one raw id-embedding token per field.
- **Orthogonal rotation of the static features** (`rotation`) [proposal]: the low-cardinality fields
  (gender, age, occupation, genres, year, category) are concatenated into one vector of S·d dimensions and
  rotated by a learned orthogonal matrix (`torch.nn.utils.parametrizations.orthogonal`, so it stays a
  rotation), then split back into S tokens: the basis the static features interact in is learned without
  changing their norms or mixing capacity into a dense layer. Off: the identity.
- **Efficient attention** (`keep_ratio`) [proposal]: the first layer attends over every token; the
  attention [CLS] pays to each token is its contribution, and only the top ⌈keep_ratio·N⌉ tokens (padded
  behaviours never) go through the remaining layers. With `keep_ratio: 1` every token is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from recsys_core.layers import FeatureEmbedding, kmeans, mlp
from recsys_core.layers.field_transformer import TokenEncoderLayer
from recsys_core.registry import register_model


def behaviour_codes(rows: np.ndarray, cols: np.ndarray, n_rows: int, svd_dim: int, levels: int, codebook_size: int,
                    seed: int = 0) -> np.ndarray:
    """Semantic codes [n_rows, levels] in 1..codebook_size (0 = an id never seen) of the ids `rows` from
    their co-occurrences with `cols` (see the module docstring)."""
    from scipy import sparse
    from scipy.sparse.linalg import svds

    n_cols = int(cols.max(initial=0)) + 1
    counts = sparse.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_rows, n_cols)).tocsr()
    counts.sum_duplicates()
    counts.data = np.sqrt(counts.data)
    seen = np.asarray(counts.getnnz(axis=1) > 0) & (np.arange(n_rows) > 0)
    k = max(1, min(svd_dim, min(counts.shape) - 1))
    u, s, _ = svds(counts, k=k, random_state=seed)
    vectors = u * s
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-8)
    codes = np.zeros((n_rows, levels), dtype=np.int64)
    residual = torch.from_numpy(vectors[seen].astype(np.float32))
    if not len(residual):
        return codes
    generator = torch.Generator().manual_seed(seed)
    for level in range(levels):
        centres = kmeans(residual, codebook_size, iters=15, generator=generator)
        assign = torch.cdist(residual, centres).argmin(1)
        codes[seen, level] = assign.numpy() + 1
        residual = residual - centres[assign]
    return codes


@register_model("store", tasks="ctr")
class STORE(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), semantic_codes: dict[str, np.ndarray] | None = None,
                 d_model: int = 32, layers: int = 2, heads: int = 4, dropout: float = 0.0,
                 mlp_hidden: Sequence[int] = (128,), semantic_tokens: bool = True, tokenize_min_vocab: int = 1000,
                 code_levels: int = 3, codebook_size: int = 64, svd_dim: int = 32, rotation: bool = True,
                 keep_ratio: float = 0.5):
        super().__init__()
        if max_len <= 0:
            raise ValueError("STORE reads user histories; this data has none (data.kind ctr_sample)")
        if dense_dim:
            raise ValueError("STORE models categorical fields only; this data has dense features")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        if layers < 1:
            raise ValueError("STORE needs at least one layer")
        self.user_vocab, self.item_vocab = list(user_field_vocab_sizes), list(field_vocab_sizes)
        sample_vocab = self.user_vocab + self.item_vocab
        self.n_user = len(self.user_vocab)
        self.semantic_tokens, self.rotation_on, self.keep_ratio = semantic_tokens, rotation, keep_ratio
        self.code_levels = code_levels
        # which sample fields are tokenised (high cardinality) and which are static
        self.tokenized = [i for i, v in enumerate(sample_vocab) if v >= tokenize_min_vocab]
        self.static = [i for i in range(len(sample_vocab)) if i not in self.tokenized]
        codes = semantic_codes or {}
        for i in self.tokenized if semantic_tokens else []:
            key = f"field{i}"
            if key not in codes:
                raise ValueError(f"STORE needs the semantic codes of sample field {i} (built by STORE.data_inputs "
                                 "from the training data): build the model through the ctr task")
            table = torch.as_tensor(np.asarray(codes[key]), dtype=torch.long)
            if table.shape != (sample_vocab[i], code_levels):
                raise ValueError(f"semantic codes of field {i}: shape {tuple(table.shape)} != "
                                 f"({sample_vocab[i]}, {code_levels})")
            self.register_buffer(f"codes_field{i}", table)
        self.features = FeatureEmbedding(self.item_vocab, d_model)
        self.user_features = FeatureEmbedding(self.user_vocab, d_model)
        self.code_embeddings = nn.ModuleDict({
            f"field{i}": FeatureEmbedding([codebook_size + 1] * code_levels, d_model)
            for i in (self.tokenized if semantic_tokens else [])})
        n_static = len(self.static)
        self.rotation = (parametrizations.orthogonal(nn.Linear(n_static * d_model, n_static * d_model, bias=False))
                         if rotation and n_static else None)
        per_field = [code_levels if (semantic_tokens and i in self.tokenized) else 1 for i in range(len(sample_vocab))]
        self.n_sample_tokens = sum(per_field)
        self.max_len, self.d_model = max_len, d_model
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.sample_positions = nn.Parameter(torch.randn(1, self.n_sample_tokens, d_model) * 0.02)
        self.history_positions = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)  # from the latest backwards
        self.layers = nn.ModuleList(TokenEncoderLayer(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = mlp(d_model, mlp_hidden, 1, activation=nn.GELU, dropout=dropout)

    @staticmethod
    def data_inputs(data: Any, params: dict[str, Any]) -> dict[str, Any]:
        """The semantic codes of the high-cardinality fields, from the training clicks (module docstring)."""
        if not params.get("semantic_tokens", True):
            return {}
        threshold = int(params.get("tokenize_min_vocab", 1000))
        levels, size = int(params.get("code_levels", 3)), int(params.get("codebook_size", 64))
        svd_dim = int(params.get("svd_dim", 32))
        train = data.splits["train"]
        clicked = train.label > 0.5
        users, items = train.user[clicked].astype(np.int64), train.cand[clicked].astype(np.int64)
        item_ids = data.item_fields[items, 0]
        user_vocab = list(getattr(data, "user_field_vocab_sizes", []) or [])
        codes: dict[str, np.ndarray] = {}
        for i, vocab in enumerate(user_vocab + list(data.field_vocab_sizes)):
            if vocab < threshold:
                continue
            if i < len(user_vocab):  # a user field: its values' co-occurrence with items
                rows, cols = data.user_fields[users, i], item_ids
            else:  # an item field: its values' co-occurrence with users
                rows, cols = data.item_fields[items, i - len(user_vocab)], users
            codes[f"field{i}"] = behaviour_codes(rows, cols, vocab, svd_dim, levels, size)
        return {"semantic_codes": codes}

    # -- tokens -----------------------------------------------------------------------------------
    def _field_tokens(self, field: int, ids: torch.Tensor) -> torch.Tensor:
        """Tokens [..., n, d] of sample field `field` for ids [...]: its code tokens, or its id embedding."""
        if self.semantic_tokens and field in self.tokenized:
            return self.code_embeddings[f"field{field}"](getattr(self, f"codes_field{field}")[ids])
        table = (self.user_features.tables[field] if field < self.n_user
                 else self.features.tables[field - self.n_user])
        return table(ids).unsqueeze(-2)

    def sample_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cand = batch["cand_fields"]
        if self.n_user:
            if "user_fields" not in batch:
                raise ValueError("this STORE was built with user fields: the batch lacks `user_fields`")
            ids = torch.cat([batch["user_fields"], cand], 1)
        else:
            ids = cand
        if ids.shape[1] != self.n_user + len(self.item_vocab):
            raise ValueError(f"expected {len(self.item_vocab)} item fields, got {cand.shape[1]}")
        tokens = {i: self._field_tokens(i, ids[:, i]) for i in range(ids.shape[1])}
        if self.static:
            static = torch.cat([tokens[i] for i in self.static], 1)  # [B, S, d]
            if self.rotation is not None:
                static = self.rotation(static.flatten(1)).view_as(static)
            for j, i in enumerate(self.static):
                tokens[i] = static[:, j:j + 1]
        return torch.cat([tokens[i] for i in range(ids.shape[1])], 1)

    def history_tokens(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per behaviour [B, T, d] (the sum of its fields' tokens) and the padding mask [B, T]."""
        base = self.n_user
        token = sum(self._field_tokens(base + f, hist[..., f]).sum(-2) for f in range(hist.shape[-1]))
        t = hist.shape[1]
        if t > self.max_len:
            raise ValueError(f"history of {t} items exceeds max_len {self.max_len}")
        token = token + self.history_positions[:, :t].flip(1)
        return token, ~(hist > 0).any(-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "hist_fields" not in batch:
            raise ValueError("STORE needs `hist_fields` (user histories) in the batch")
        sample = self.sample_tokens(batch) + self.sample_positions
        hist, hist_pad = self.history_tokens(batch["hist_fields"])
        x = torch.cat([self.cls.expand(len(sample), -1, -1), sample, hist], 1)
        pad = torch.cat([torch.zeros(len(sample), 1 + sample.shape[1], dtype=torch.bool, device=x.device), hist_pad], 1)
        x, weights = self.layers[0](x, pad, cls_weights=len(self.layers) > 1 and self.keep_ratio < 1)
        if weights is not None:
            x, pad = self.filter_tokens(x, pad, weights)
        for layer in self.layers[1:]:
            x, _ = layer(x, pad)
        return self.head(self.norm(x[:, 0])).squeeze(-1)

    def filter_tokens(self, x: torch.Tensor, pad: torch.Tensor, weights: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS] and the ⌈keep_ratio·N⌉ tokens [CLS] attends to most (padded tokens rank last)."""
        n = x.shape[1] - 1
        keep = max(1, math.ceil(self.keep_ratio * n))
        scores = weights[:, 1:].masked_fill(pad[:, 1:], -1.0)
        top = scores.topk(keep, dim=1).indices + 1
        index = torch.cat([torch.zeros_like(top[:, :1]), top], 1)
        return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1])), pad.gather(1, index)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])
