"""Query-Former: compress a variable-length sequence into M tokens with M learnable queries that
cross-attend to it (BLIP-2's Q-Former, used as a sequence compressor by OneRec for lifelong sequences and
by OneMall per behaviour, METHODS.md §1.7, §2.16; also a sequence tokeniser for ranking models).

    QueryFormer(dim, num_queries, heads)(x [B, T, D], mask [B, T]) -> [B, M, D]

Each layer (pre-LN, residual): optional self-attention among the queries, cross-attention from the
queries to the sequence (padding keys masked), FFN. Cost per layer ~ M*T*D for the cross-attention
instead of T*T*D for self-attention over the sequence, and whatever consumes the output sees M tokens
instead of T. The block adds no positions: callers add position / time embeddings to `x` if order matters.

`CrossAttention` (queries [B, M, D] attend to keys/values [B, T, Dkv]) is exposed on its own, with the
key/value projection split from the attention so a decoder can project a fixed context once and reuse it
at every decoding step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.attention import PointwiseFeedForward


class CrossAttention(nn.Module):
    """Multi-head softmax cross-attention. forward(q [B, M, D], kv [B, T, Dkv], mask) -> [B, M, D].

    mask: [B, T] or [B, M, T] bool, True = may attend. A query row with no visible key gets a zero
    output (instead of softmax's NaN), so an empty sequence contributes nothing.
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, Dkv] -> keys, values [B, H, T, D/H] each (cache these when kv is fixed)."""
        b, t, _ = kv.shape
        k, v = self.kv(kv).view(b, t, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q [B, M, D] with projected k, v [B, H, T, D/H] -> [B, M, D]."""
        b, m, d = q.shape
        q = self.q(q).view(b, m, self.heads, -1).transpose(1, 2)
        attn_mask = None
        if mask is not None:
            mask = mask.unsqueeze(1) if mask.dim() == 2 else mask  # [B, M|1, T]
            any_key = mask.any(-1, keepdim=True)  # [B, M|1, 1]
            attn_mask = (mask | ~any_key).unsqueeze(1)  # rows without keys attend to all; zeroed below
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, m, d)
        if mask is not None:
            y = y * any_key.to(y.dtype)
        return self.out(y)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.project_kv(kv)
        return self.attend(q, k, v, mask)


class QueryFormerLayer(nn.Module):
    """Queries [B, M, D] <- (self-attention) <- cross-attention to x [B, T, Dkv] <- FFN; pre-LN residuals."""

    def __init__(
        self, dim: int, heads: int, ffn_dim: int, kv_dim: int | None, self_attention: bool, dropout: float
    ) -> None:
        super().__init__()
        self.self_attn = (
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if self_attention else None
        )
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(kv_dim or dim)
        self.cross = CrossAttention(dim, heads, kv_dim, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = PointwiseFeedForward(dim, ffn_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.self_attn is not None:
            assert self.norm_self is not None  # built together with self_attn
            h = self.norm_self(q)
            q = q + self.drop(self.self_attn(h, h, h, need_weights=False)[0])
        q = q + self.drop(self.cross(self.norm_q(q), self.norm_kv(x), mask))
        return q + self.ffn(self.norm_ffn(q))


class QueryFormer(nn.Module):
    """M learnable queries summarise a sequence: x [B, T, Dkv], mask [B, T] bool (True = real) -> [B, M, D].

    dim: query / output width; kv_dim: sequence width (default dim); layers: stacked QueryFormerLayers;
    ffn_dim: FFN hidden width (default 4 * dim); self_attention: queries also attend to each other in
    every layer (BLIP-2) or only read the sequence. Padding positions never influence the output.
    """

    def __init__(
        self,
        dim: int,
        num_queries: int,
        heads: int,
        layers: int = 1,
        ffn_dim: int | None = None,
        kv_dim: int | None = None,
        self_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_queries <= 0 or layers <= 0:
            raise ConfigError(f"QueryFormer needs num_queries > 0 and layers > 0, got {num_queries}, {layers}")
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(
            QueryFormerLayer(dim, heads, ffn_dim or 4 * dim, kv_dim, self_attention, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, x, mask)
        return self.norm(q)
