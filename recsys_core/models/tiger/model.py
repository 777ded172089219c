"""TIGER-style generative retriever (Rajput et al. 2023) as a decoder-only transformer over semantic-ID
tokens.

TIGER itself is a T5 encoder–decoder that encodes the history and decodes one item's code tuple.
Here the history and every next item live in one flattened token stream
`item_1 tokens | item_2 tokens | ...` and a single causal pass scores every next item of a training
sequence at once (the loss covers every token of every item after the first), which is ~n times
more supervision per forward pass than one encoder pass per prefix: the point on a CPU budget.
Decoding shares the user's history cache across the beams (the beams are extra query rows over one
prefix cache) and keeps a small per-beam cache for the few generated tokens.

Token layout: 0 = padding; level l, code c → `offsets[l] + c` with `offsets[0] = 1`. No BOS/EOS:
a history always has at least one item and an item always has exactly L tokens. The output layer is
tied to the token embedding and each position only scores the codes of the level it predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import CausalTransformer, init_weights
from recsys_core.layers.transformer import apply_rope
from recsys_core.registry import register_model


@dataclass
class DecodeState:
    """Per-layer key/value caches of a batch of histories ([B, H, T, hd], shared by every beam) and of
    the tokens generated so far ([B, H, W, s, hd], one row per beam)."""

    prefix_k: list[torch.Tensor]
    prefix_v: list[torch.Tensor]
    prefix_mask: torch.Tensor  # [B, 1, 1, T] True at real history tokens
    gen_k: list[torch.Tensor]
    gen_v: list[torch.Tensor]
    position: int  # RoPE position of the next fed token
    level: int  # level of the next fed token


@register_model("tiger", tasks="generative_retrieval")
class TIGER(nn.Module):
    def __init__(self, level_sizes: list[int], max_items: int, hidden: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        if not level_sizes or min(level_sizes) < 1:
            raise ValueError(f"level_sizes must be positive codebook sizes, got {level_sizes}")
        self.level_sizes = [int(s) for s in level_sizes]
        self.n_levels = len(self.level_sizes)
        self.offsets = [1 + sum(self.level_sizes[:level]) for level in range(self.n_levels)]
        self.vocab_size = 1 + sum(self.level_sizes)
        self.max_items = max_items
        token_level = torch.full((self.vocab_size,), -1, dtype=torch.long)
        for level, (offset, size) in enumerate(zip(self.offsets, self.level_sizes, strict=True)):
            token_level[offset:offset + size] = level
        self.register_buffer("token_level", token_level, persistent=False)
        self.token_emb = nn.Embedding(self.vocab_size, hidden, padding_idx=0)
        self.level_emb = nn.Embedding(self.n_levels + 1, hidden, padding_idx=0)  # 0 = padding, l + 1 = level l
        self.out_bias = nn.Parameter(torch.zeros(self.vocab_size))
        # the training input is (max_items + 1) items minus one token; decoding needs max_items + 1 items
        self.transformer = CausalTransformer(hidden, layers, heads, (max_items + 1) * self.n_levels, dropout)
        self.emb_dropout = nn.Dropout(dropout)
        self.heads, self.head_dim = heads, hidden // heads
        init_weights(self)

    # ---- training ---------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        """Token + level embeddings; `scales` (same shape as `tokens`) multiplies each token's code embedding:
        ADA-SID's router weights, so the codes the router deems important weigh more in the history."""
        codes = self.token_emb(tokens)
        if scales is not None:
            codes = codes * scales.to(codes.dtype).unsqueeze(-1)
        return codes + self.level_emb(self.token_level[tokens] + 1)

    def hidden_states(self, tokens: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        return self.transformer(self.emb_dropout(self.embed(tokens, scales)), padding_mask=tokens > 0)

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Scores of level `level`'s codes (column = code) from hidden states [..., d]."""
        lo, hi = self.offsets[level], self.offsets[level] + self.level_sizes[level]
        return hidden @ self.token_emb.weight[lo:hi].T + self.out_bias[lo:hi]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over every target token (`targets` > 0), each against its level's codes."""
        hidden = self.hidden_states(batch["tokens"], batch.get("scales"))
        targets = batch["targets"]
        target_level = self.token_level[targets]
        total, count = hidden.new_zeros(()), 0
        for level in range(self.n_levels):
            keep = target_level == level
            n = int(keep.sum())
            if n:
                logits = self.level_logits(hidden[keep], level)
                total = total + F.cross_entropy(logits, targets[keep] - self.offsets[level], reduction="sum")
                count += n
        if not count:
            raise ValueError("the batch has no target tokens")
        return total / count

    def code_prob_loss(self, probs: list[torch.Tensor], item_mask: torch.Tensor, target_gradient: bool = False,
                       input_vectors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The next-token loss of item sequences given as code distributions instead of token ids (MMQ's
        behaviour-aware stage: soft indexing lets this loss train the tokenizer).

        probs: one [B, T, size_l] tensor per level, the code distribution of each item of left-padded windows
        of T items (straight-through one-hots keep the forward pass equal to hard tokens); item_mask [B, T]
        is True at real items. Input embedding of level l = probs_l @ E_l; every token of every item after a
        row's first real item is a target, scored by −Σ_k probs_target,k · log softmax(logits)_k. The
        gradient reaches the history items' distributions; with `target_gradient` it also moves each target
        item's distribution towards what its history predicts (which rewards giving every item the same
        codes: the first MovieLens run collapsed to 48 distinct tuples for 3,883 movies). `input_vectors`
        (one [B, T, hidden] tensor per level) are added to the input embeddings: MMQ's soft codewords."""
        if len(probs) != self.n_levels:
            raise ValueError(f"expected code distributions for {self.n_levels} levels, got {len(probs)}")
        b, t = item_mask.shape
        levels = range(self.n_levels)
        tables = [self.token_emb.weight[self.offsets[lv]:self.offsets[lv] + self.level_sizes[lv]] for lv in levels]
        x = torch.stack([probs[lv] @ tables[lv] + self.level_emb.weight[lv + 1]
                         + (input_vectors[lv] if input_vectors is not None else 0) for lv in levels], 2)
        x = x.reshape(b, t * self.n_levels, -1)
        real = item_mask.repeat_interleave(self.n_levels, dim=1)
        hidden = self.transformer(self.emb_dropout(x), padding_mask=real)
        # A target is a token of a real item with at least one real item before it in its row.
        seen_before = (torch.cumsum(item_mask.long(), 1) - item_mask.long()) > 0
        target_ok = (item_mask & seen_before).repeat_interleave(self.n_levels, dim=1)[:, 1:]
        total, count = hidden.new_zeros(()), 0
        target_level = torch.arange(1, t * self.n_levels, device=x.device) % self.n_levels
        for lv in levels:
            at_level = target_level == lv
            keep = target_ok & at_level.view(1, -1)
            if not bool(keep.any()):
                continue
            rows, cols = keep.nonzero(as_tuple=True)
            logits = hidden[rows, cols] @ tables[lv].T + self.out_bias[self.offsets[lv]:self.offsets[lv] + self.level_sizes[lv]]
            target = probs[lv][rows, (cols + 1) // self.n_levels]
            if not target_gradient:
                target = target.detach()
            total = total - (target * F.log_softmax(logits, -1)).sum()
            count += len(rows)
        if not count:
            raise ValueError("the windows have no target items (each needs two real items)")
        return total / count

    # ---- incremental decoding ---------------------------------------------------------------------
    def begin_decode(self, tokens: torch.Tensor, scales: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        """Encode left-padded histories [B, T] (whole items) once; returns the log-probabilities of the
        next item's first code [B, size_0] and the caches for `extend_decode`."""
        b, t = tokens.shape
        if t > self.max_items * self.n_levels:
            raise ValueError(f"a history of {t} tokens is longer than the model's {self.max_items} items")
        real = tokens > 0
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=tokens.device)).view(1, 1, t, t)
        mask = (mask & real.view(b, 1, 1, t)) | torch.eye(t, dtype=torch.bool, device=tokens.device).view(1, 1, t, t)
        cos, sin = self.transformer.cos[:t], self.transformer.sin[:t]
        x = self.embed(tokens, scales)
        keys, values = [], []
        last_block = len(self.transformer.blocks) - 1
        for i, block in enumerate(self.transformer.blocks):
            q, k, v = block.qkv(block.attn_norm(x)).view(b, t, 3, self.heads, self.head_dim).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if i == last_block:  # the cache holds its keys/values; only the last position goes on
                q, x, mask = q[:, :, -1:], x[:, -1:], mask[:, :, -1:]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.out(attn.transpose(1, 2).reshape(b, x.shape[1], -1))
            h = block.ffn_norm(x)
            x = x + block.down(F.silu(block.gate(h)) * block.up(h))
            keys.append(k)
            values.append(v)
        last = self.transformer.norm(x[:, -1])
        empty = keys[0].new_zeros(b, self.heads, 1, 0, self.head_dim)
        state = DecodeState(keys, values, real.view(b, 1, 1, t), [empty] * len(keys), [empty] * len(keys),
                            position=t, level=0)
        return F.log_softmax(self.level_logits(last, 0), -1), state

    def extend_decode(self, state: DecodeState, parents: torch.Tensor, codes: torch.Tensor,
                      scales: torch.Tensor | None = None) -> tuple[torch.Tensor, DecodeState]:
        """Append code `codes[b, w]` (of level `state.level`) to beam `parents[b, w]` of the previous step;
        returns the next level's log-probabilities [B, W, size] and the new state. `scales` [B, W]: the
        generated tokens' embedding scales (see `embed`)."""
        level = state.level
        if level + 1 >= self.n_levels:
            raise ValueError("the item is complete: every level has been decoded")
        b, w = codes.shape
        tokens = codes + self.offsets[level]
        x = self.token_emb(tokens)
        if scales is not None:
            x = x * scales.to(x.dtype).unsqueeze(-1)
        x = x + self.level_emb.weight[level + 1]
        pos = state.position
        cos, sin = self.transformer.cos[pos:pos + 1], self.transformer.sin[pos:pos + 1]
        scale = 1.0 / math.sqrt(self.head_dim)
        gather_index = parents.view(b, 1, w, 1, 1)
        new_k, new_v = [], []
        for i, block in enumerate(self.transformer.blocks):
            q, k, v = block.qkv(block.attn_norm(x)).view(b, w, 3, self.heads, self.head_dim).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, H, W, hd]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            old_k, old_v = state.gen_k[i], state.gen_v[i]
            s = old_k.shape[3]
            idx = gather_index.expand(b, self.heads, w, s, self.head_dim)
            gen_k = torch.cat([old_k.gather(2, idx), k.unsqueeze(3)], 3)  # [B, H, W, s + 1, hd]
            gen_v = torch.cat([old_v.gather(2, idx), v.unsqueeze(3)], 3)
            scores_prefix = (q @ state.prefix_k[i].transpose(-1, -2)) * scale  # [B, H, W, T]
            scores_prefix = scores_prefix.masked_fill(~state.prefix_mask, -torch.inf)
            scores_gen = (q.unsqueeze(3) @ gen_k.transpose(-1, -2)).squeeze(3) * scale  # [B, H, W, s + 1]
            weights = torch.softmax(torch.cat([scores_prefix, scores_gen], -1), -1)
            t = scores_prefix.shape[-1]
            attn = weights[..., :t] @ state.prefix_v[i] + (weights[..., t:].unsqueeze(3) @ gen_v).squeeze(3)
            x = x + block.out(attn.transpose(1, 2).reshape(b, w, -1))
            h = block.ffn_norm(x)
            x = x + block.down(F.silu(block.gate(h)) * block.up(h))
            new_k.append(gen_k)
            new_v.append(gen_v)
        hidden = self.transformer.norm(x)
        next_state = DecodeState(state.prefix_k, state.prefix_v, state.prefix_mask, new_k, new_v,
                                 position=pos + 1, level=level + 1)
        return F.log_softmax(self.level_logits(hidden, level + 1), -1), next_state
