"""Encoder-decoder Transformer blocks with a KV cache (T5 / Vaswani et al. 2017 layout, pre-LN).

Shapes: B batch (or beam rows), S memory (encoder) length, T decoder length, D model width, H heads,
E head width (inner attention width H * E may differ from D, as in T5). Masks are boolean with
True = "may attend".

- Attention: query from x [B, T, D], keys / values from kv [B, S, D]; `project_kv` computes the
  [B, H, S, E] keys and values once (cross-attention memory, or the self-attention cache).
- EncoderLayer: bidirectional self-attention over valid tokens + FFN.
- DecoderLayer: causal self-attention (with an optional cache of the earlier steps' keys / values),
  cross-attention to the encoder memory, FFN. Running T tokens at once without a cache and running
  them one at a time with the cache give the same outputs (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.attention import PointwiseFeedForward

KV = tuple[torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    """Multi-head softmax attention with separate query and key/value inputs."""

    def __init__(
        self, dim: int, heads: int, head_dim: int | None = None, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or dim // heads
        inner = heads * self.head_dim
        self.q = nn.Linear(dim, inner, bias=bias)
        self.kv = nn.Linear(dim, 2 * inner, bias=bias)
        self.out = nn.Linear(inner, dim, bias=bias)
        self.dropout = dropout

    def project_kv(self, kv: torch.Tensor) -> KV:
        """[B, S, D] -> keys, values [B, H, S, E]."""
        b, s, _ = kv.shape
        k, v = self.kv(kv).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x [B, T, D]; keys/values [B, H, S, E]; mask [B, T, S] or [B, 1, S] bool -> [B, T, D]."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=None if mask is None else mask.unsqueeze(1),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class EncoderLayer(nn.Module):
    """Pre-LN: x + Attn(LN x) ; x + FFN(LN x). forward(x [B, S, D], mask [B, S | 1, S] bool) -> [B, S, D].

    Every query needs at least one key it may attend to (else softmax gives NaN)."""

    def __init__(
        self, dim: int, heads: int, head_dim: int | None, ffn_dim: int, dropout: float = 0.1, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.ffn = PointwiseFeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, *self.attn.project_kv(h), mask))
        return x + self.ffn(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to memory, FFN, each with a residual.

    forward(x [R, T, D], memory (keys, values) [U, H, S, E] from `memory_kv`, memory_mask [U, S] bool
            (or [U, (R/U)*T, S]: a mask per query, in the grouped order below), past (keys, values)
            [R, H, P, E] of the P earlier positions or None)
        -> (y [R, T, D], present (keys, values) [R, H, P + T, E]).
    R may be a multiple of U (beam search): rows u*R/U .. (u+1)*R/U - 1 belong to memory row u, so the
    memory is never copied per beam (the queries of a user's beams are attended together).
    """

    def __init__(
        self, dim: int, heads: int, head_dim: int | None, ffn_dim: int, dropout: float = 0.1, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads, head_dim, dropout)
        self.cross_attn = Attention(dim, heads, head_dim, dropout)
        self.ffn = PointwiseFeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> KV:
        """Encoder output [B, S, D] -> cross-attention keys / values, computed once per user."""
        return self.cross_attn.project_kv(memory)

    def forward(
        self, x: torch.Tensor, memory: KV, memory_mask: torch.Tensor, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        t = x.shape[1]
        h = self.norm1(x)
        keys, values = self.self_attn.project_kv(h)
        if past is not None:
            keys, values = torch.cat([past[0], keys], 2), torch.cat([past[1], values], 2)
        p = keys.shape[2] - t  # new query i sits at absolute position p + i and sees keys <= p + i
        causal = torch.ones(t, p + t, dtype=torch.bool, device=x.device).tril(p).unsqueeze(0)
        x = x + self.drop(self.self_attn(h, keys, values, causal))
        r, u = x.shape[0], memory[0].shape[0]
        grouped = self.norm2(x).reshape(u, (r // u) * t, -1)  # a user's beams share its memory
        per_query = memory_mask if memory_mask.dim() == 3 else memory_mask.unsqueeze(1)
        x = x + self.drop(self.cross_attn(grouped, *memory, per_query).reshape(r, t, -1))
        return x + self.ffn(self.norm3(x)), (keys, values)
