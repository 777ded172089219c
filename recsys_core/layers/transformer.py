"""A Llama-style causal transformer (pre-norm RMSNorm, RoPE, bias-free attention, SwiGLU), shared
by the sequence models (SASRec-style baseline, the generative retriever over semantic IDs, GPSD)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cache(seq_len: int, head_dim: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2)


def swiglu_hidden(dim: int) -> int:
    """GPSD's rule: 2/3 of 4·dim, rounded up to a multiple of 32."""
    hidden = int(2 * 4 * dim / 3)
    return 32 * math.ceil(hidden / 32)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.attn_norm, self.ffn_norm = RMSNorm(dim), RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        hidden = swiglu_hidden(dim)
        self.gate, self.up, self.down = (nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False),
                                         nn.Linear(hidden, dim, bias=False))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None
                ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos[:t], sin[:t]), apply_rope(k, cos[:t], sin[:t])
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                              dropout_p=self.dropout.p if self.training else 0.0)
        x = x + self.dropout(self.out(attn.transpose(1, 2).reshape(b, t, d)))
        h = self.ffn_norm(x)
        return x + self.dropout(self.down(F.silu(self.gate(h)) * self.up(h)))


class CausalTransformer(nn.Module):
    """Embeddings in, hidden states out. `padding_mask` (B, T) is True at real positions; padded
    positions attend only to themselves so left padding never produces NaNs."""

    def __init__(self, dim: int, layers: int, heads: int, max_len: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = RMSNorm(dim)
        cos, sin = rope_cache(max_len, dim // heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} positions exceeds max_len {self.max_len}")
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device)
        if causal:
            mask = torch.tril(mask)
        mask = mask.view(1, 1, t, t)
        if padding_mask is not None:
            mask = mask & padding_mask.view(-1, 1, 1, t)
            mask = mask | torch.eye(t, dtype=torch.bool, device=x.device).view(1, 1, t, t)
        for block in self.blocks:
            x = block(x, self.cos, self.sin, mask)
        return self.norm(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, 0.02) for linear and embedding weights (GPSD's and most transformers' init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
