"""GPSD: generative pretraining for scalable discriminative recommendation (Wang et al., KDD'25;
code chqiwang/gpsd-rec), re-implemented on the zoo's Llama-style `CausalTransformer`.

Two models share one backbone and its parameter names, so a pretrained run transfers by name:
- `features` (the zoo's `FeatureEmbedding`: `features.tables.0` is the item id, the other tables the
  other fields: category, ...), `segment_embeddings` (0 = history, 1 = candidate), `encoder` (RMSNorm,
  RoPE, SwiGLU, 4 heads).
- token = sum of the item's field embeddings + its segment embedding. Init N(0, 0.02), dropout 0.

`gpsd_generative` (task gpsd_pretrain): causal next-item prediction with a sampled softmax on
cosine/τ (τ = 0.05; hidden states and item vectors L2-normalised; the output table is the input item
table; |N| uniform negatives shared by the whole batch, a negative equal to the target is masked)
plus a full softmax over categories on cosine/τ (output tied to the category table). L = L_item +
L_cate.

`gpsd` (task ctr): the candidate is placed right after the history with segment 1, the causal mask is
kept, and the rank head MLP(d → 4d → 1, ReLU) on the candidate position gives the logit (BCE).
Under the causal mask a history's states never depend on the candidate, so `forward` runs each
distinct history of a batch once and lets every candidate attend to its cached keys/values: the same
logits as the plain [history, candidate] sequences (`forward_full_sequences`, compared in the tests),
about 2× faster in training (a positive and its negative share a history) and ~6× when serving one
user's 100 candidates.
`model_params.transfer = {from_run, mode: none|full|sparse, freeze_sparse}`:
- full: every parameter of the pretrained run's best.pt with the same name (the whole backbone);
- sparse: only the item-id table `features.tables.0.weight` (GPSD's ST);
- freeze_sparse: the transferred item table gets requires_grad=False (GPSD's ST&SF / FT&SF; the
  trainer leaves frozen parameters out of the optimiser, so weight decay never touches them).
The transfer happens when the model is built, so the pretrained run folder must still exist when a
transferred run is loaded again (its own best.pt then overwrites every weight).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import CausalTransformer, FeatureEmbedding, LegacyFieldTables, init_weights
from recsys_core.layers.features import upgrade_legacy_names
from recsys_core.layers.transformer import apply_rope
from recsys_core.registry import register_model

SPARSE_PARAMS = re.compile(r"features\.tables\.0\.weight")  # the item-id table (field 0 by the batch contract)
TRANSFER_MODES = ("none", "full", "sparse")


class GPSDBackbone(LegacyFieldTables, nn.Module):
    # runs saved before the shared FeatureEmbedding had `item_embeddings` and `field_embeddings.{i}`
    legacy_names = ((r"item_embeddings\.weight", "features.tables.0.weight"),
                    (r"field_embeddings\.(\d+)\.weight", lambda m: f"features.tables.{int(m.group(1)) + 1}.weight"))

    def __init__(self, field_vocab_sizes: Sequence[int], positions: int, hidden: int = 64, layers: int = 4,
                 heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.field_vocab_sizes = [int(v) for v in field_vocab_sizes]
        if not self.field_vocab_sizes:
            raise ValueError("GPSD needs at least the item field")
        self.hidden = hidden
        self.features = FeatureEmbedding(self.field_vocab_sizes, hidden)
        self.segment_embeddings = nn.Embedding(2, hidden)
        self.encoder = CausalTransformer(hidden, layers, heads, positions, dropout)
        self.emb_dropout = nn.Dropout(dropout)

    @property
    def item_embeddings(self) -> nn.Embedding:
        """The item-id table (field 0): GPSD's sparse parameters, and the generative model's output table."""
        return self.features.tables[0]

    def token_embeddings(self, fields: torch.Tensor, segment: int) -> torch.Tensor:
        """An item token = the sum of its field embeddings + the segment embedding."""
        return self.features.summed(fields) + self.segment_embeddings.weight[segment]


@register_model("gpsd_generative", tasks="gpsd_pretrain")
class GPSDGenerative(GPSDBackbone):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, hidden: int = 64, layers: int = 4,
                 heads: int = 4, dropout: float = 0.0, temperature: float = 0.05, n_negatives: int = 1024,
                 category_loss_weight: float = 1.0):
        super().__init__(field_vocab_sizes, max_len, hidden, layers, heads, dropout)
        if n_negatives < 1:
            raise ValueError("n_negatives must be >= 1")
        self.temperature, self.n_negatives = temperature, n_negatives
        self.category_loss_weight = category_loss_weight if len(self.features) > 1 else 0.0
        init_weights(self)

    def hidden_states(self, fields: torch.Tensor) -> torch.Tensor:
        x = self.emb_dropout(self.token_embeddings(fields, 0))
        return self.encoder(x, padding_mask=(fields > 0).any(-1))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: `input_fields` [B, T, F] and `target_fields` [B, T, F] (the next item's fields; item 0 = none)."""
        h = self.hidden_states(batch["input_fields"])
        targets = batch["target_fields"]
        keep = targets[..., 0] > 0
        h = F.normalize(h[keep], dim=-1)
        target_items = targets[..., 0][keep]
        table = self.item_embeddings.weight
        positive = (h * F.normalize(table[target_items], dim=-1)).sum(-1, keepdim=True)
        negatives = torch.randint(1, table.shape[0], (self.n_negatives,), device=h.device)
        negative = h @ F.normalize(table[negatives], dim=-1).T
        negative = negative.masked_fill(target_items[:, None] == negatives[None, :], float("-inf"))
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        item_loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=h.device))
        loss, logs = item_loss, {"item_loss": float(item_loss.detach())}
        if self.category_loss_weight:
            categories = self.features.tables[1].weight
            cat_logits = h @ F.normalize(categories, dim=-1).T / self.temperature
            target_cats = targets[..., 1][keep]
            if (target_cats > 0).any():  # category 0 = item without a category: nothing to predict
                cat_loss = F.cross_entropy(cat_logits, target_cats, ignore_index=0)
                loss = loss + self.category_loss_weight * cat_loss
                logs["category_loss"] = float(cat_loss.detach())
        return loss, logs

    def score_items(self, fields: torch.Tensor) -> torch.Tensor:
        """Cosine/τ of the last position with every item (column = item index) for histories [B, T, F]."""
        h = F.normalize(self.hidden_states(fields)[:, -1], dim=-1)
        return h @ F.normalize(self.item_embeddings.weight, dim=-1).T / self.temperature


@register_model("gpsd", tasks="ctr")
class GPSDRanker(GPSDBackbone):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0, hidden: int = 64,
                 layers: int = 4, heads: int = 4, dropout: float = 0.0, transfer: dict[str, Any] | None = None):
        if max_len <= 0:
            raise ValueError("GPSD ranks a candidate after a user history; this data has none "
                             "(data.kind ctr_sample): use deepfm for history-free CTR samples")
        super().__init__(field_vocab_sizes, max_len + 1, hidden, layers, heads, dropout)
        self.rank_head = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, 1))
        init_weights(self)
        self.transfer_report = transfer_from_pretrained(self, transfer)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rank logits [B]. Samples that share a history (a positive and its negative) run it once."""
        if "hist_fields" not in batch:
            raise ValueError("GPSD needs `hist_fields` (user histories) in the batch")
        hist = batch["hist_fields"]
        unique, owner = torch.unique(hist.flatten(1), dim=0, return_inverse=True)
        return self.rank_logits(unique.view(-1, *hist.shape[1:]), batch["cand_fields"], owner)

    def forward_full_sequences(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The plain formulation: each sample's [history, candidate] sequence through the encoder.
        `forward` computes the same logits faster; this one is the reference the tests compare to."""
        hist, cand = batch["hist_fields"], batch["cand_fields"]
        x = torch.cat([self.token_embeddings(hist, 0), self.token_embeddings(cand, 1).unsqueeze(1)], dim=1)
        real = torch.cat([(hist > 0).any(-1), torch.ones_like(hist[:, :1, 0], dtype=torch.bool)], dim=1)
        h = self.encoder(self.emb_dropout(x), padding_mask=real)
        return self.rank_head(h[:, -1]).squeeze(-1)

    def rank_logits(self, hist: torch.Tensor, cand: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Logits of candidates [B, F] placed after histories [U, T, F] (left-padded); candidate b
        follows history owner[b]. Under the causal mask a history's states never depend on what
        follows, so each history runs once and every candidate attends to its history's cached
        keys/values plus itself: U·T + B tokens instead of B·(T + 1)."""
        enc = self.encoder
        t, n = hist.shape[1], len(cand)
        if t + 1 > enc.max_len:
            raise ValueError(f"history of {t} items exceeds max_len {enc.max_len - 1}")
        real = (hist > 0).any(-1)  # [U, T]
        eye = torch.eye(t, dtype=torch.bool, device=hist.device)
        hist_mask = (torch.tril(torch.ones(t, t, dtype=torch.bool, device=hist.device)) & real[:, None, :]) | eye
        hist_mask = hist_mask.unsqueeze(1)  # [U, 1, T, T]; padded rows see themselves only (no NaN)
        cand_mask = torch.cat([real[owner], torch.ones(n, 1, dtype=torch.bool, device=hist.device)], 1)
        cand_mask = cand_mask.view(n, 1, 1, t + 1)
        x_h = self.emb_dropout(self.token_embeddings(hist, 0))  # [U, T, d]
        x_c = self.emb_dropout(self.token_embeddings(cand, 1)).unsqueeze(1)  # [B, 1, d]
        p = enc.blocks[0].dropout.p if self.training and len(enc.blocks) else 0.0
        for block in enc.blocks:
            qh, kh, vh = _qkv(block, x_h, enc.cos[:t], enc.sin[:t])
            qc, kc, vc = _qkv(block, x_c, enc.cos[t:t + 1], enc.sin[t:t + 1])
            attn_h = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=hist_mask, dropout_p=p)
            if len(hist) == 1:  # one user's candidates (serving): a view, no gather
                kh, vh = kh.expand(n, -1, -1, -1), vh.expand(n, -1, -1, -1)
            else:
                kh, vh = kh[owner], vh[owner]
            attn_c = F.scaled_dot_product_attention(qc, torch.cat([kh, kc], 2), torch.cat([vh, vc], 2),
                                                    attn_mask=cand_mask, dropout_p=p)
            x_h = _residual_ffn(block, x_h + block.dropout(block.out(attn_h.transpose(1, 2).flatten(2))))
            x_c = _residual_ffn(block, x_c + block.dropout(block.out(attn_c.transpose(1, 2).flatten(2))))
        return self.rank_head(enc.norm(x_c[:, 0])).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])

    @torch.no_grad()
    def score_one_history(self, hist_fields: torch.Tensor, cand_fields: torch.Tensor) -> torch.Tensor:
        """Logits of N candidates [N, F] after one history [T, F] (T may be 0): the history runs once."""
        hist = hist_fields[(hist_fields > 0).any(-1)][-(self.encoder.max_len - 1):]
        if not len(hist):
            hist = torch.zeros(1, cand_fields.shape[1], dtype=torch.long, device=cand_fields.device)
        owner = torch.zeros(len(cand_fields), dtype=torch.long, device=cand_fields.device)
        return self.rank_logits(hist.unsqueeze(0), cand_fields, owner)


def _qkv(block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    b, t, _ = x.shape
    q, k, v = (z.transpose(1, 2) for z in block.qkv(block.attn_norm(x)).view(b, t, 3, block.heads, block.head_dim)
               .unbind(2))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _residual_ffn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = block.ffn_norm(x)
    return x + block.dropout(block.down(F.silu(block.gate(h)) * block.up(h)))


def transfer_from_pretrained(model: nn.Module, transfer: dict[str, Any] | None) -> dict[str, Any]:
    """Load (and optionally freeze) parameters of a pretrained `gpsd_generative` run; see the module
    docstring. Returns what was loaded and frozen (it goes to the run's metrics.json)."""
    transfer = dict(transfer or {})
    unknown = set(transfer) - {"from_run", "mode", "freeze_sparse"}
    if unknown:
        raise ValueError(f"unknown model_params.transfer keys {sorted(unknown)} (from_run, mode, freeze_sparse)")
    mode = transfer.get("mode", "none")
    freeze = bool(transfer.get("freeze_sparse", False))
    if mode not in TRANSFER_MODES:
        raise ValueError(f"model_params.transfer.mode must be one of {TRANSFER_MODES}, not {mode!r}")
    if mode == "none":
        if freeze:
            raise ValueError("transfer.freeze_sparse needs transfer.mode full or sparse (nothing is loaded to freeze)")
        return {"mode": "none"}
    if not transfer.get("from_run"):
        raise ValueError(f"transfer.mode {mode} needs transfer.from_run (a gpsd_pretrain run folder)")
    source = Path(transfer["from_run"])
    weights = source if source.suffix == ".pt" else source / "best.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: transfer.from_run must be a finished gpsd_pretrain run folder")
    pretrained = upgrade_legacy_names(torch.load(weights, map_location="cpu", weights_only=True),
                                      GPSDBackbone.legacy_names)
    own = model.state_dict()
    if mode == "full":
        names = [k for k in pretrained if k in own]
        missing = [k for k in own if k not in pretrained and not k.startswith("rank_head.")]
        if missing:
            raise ValueError(f"{weights} lacks backbone parameters {missing[:4]}...: use the same "
                             "model_params.layers as the pretrain run")
    else:
        names = [k for k in pretrained if SPARSE_PARAMS.fullmatch(k) and k in own]
    if not names:
        raise ValueError(f"no parameter of {weights} matches this model (mode {mode}): is it a gpsd_pretrain run?")
    for name in names:
        if pretrained[name].shape != own[name].shape:
            raise ValueError(f"cannot transfer {name}: pretrained shape {tuple(pretrained[name].shape)} != "
                             f"{tuple(own[name].shape)}; use the same data and model_params.hidden/layers as the "
                             "pretrain run")
    model.load_state_dict({k: pretrained[k] for k in names}, strict=False)
    frozen = []
    if freeze:
        for name, param in model.named_parameters():
            if name in names and SPARSE_PARAMS.fullmatch(name):
                param.requires_grad_(False)
                frozen.append(name)
    return {"mode": mode, "from_run": str(source), "loaded": names, "frozen": frozen}
