"""Grouped-query attention (Ainslie et al. 2023, "GQA"): `n_heads` query heads share `n_kv_heads` key/value
heads (each K/V head serves n_heads / n_kv_heads consecutive query heads), cutting the K/V projections and
cache by that factor. n_kv_heads == n_heads is ordinary multi-head attention; n_kv_heads == 1 is MQA.
MTFM (METHODS.md §2.6) uses 3 query heads over 1 K/V head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupedQueryAttention(nn.Module):
    """Softmax attention: forward(x [B, Sq, D], mask [B, Sq, Sk] bool (True = may attend), context [B, Sk, D]
    | None (None = x: self-attention)) -> [B, Sq, D]. head_dim defaults to D // n_heads.

    Target attention = queries from a subset of tokens (x), keys / values from all tokens (context).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads {n_heads} must be a positive multiple of n_kv_heads {n_kv_heads}")
        if head_dim is None and dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.n_kv_heads, self.dropout = n_heads, n_kv_heads, dropout
        self.head_dim = head_dim or dim // n_heads
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=bias)
        self.out = nn.Linear(n_heads * self.head_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, sq, _ = x.shape
        sk = context.shape[1]
        q = self.q(x).view(b, sq, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, Sq, Dh]
        k, v = self.kv(context).view(b, sk, 2, self.n_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        group = self.n_heads // self.n_kv_heads
        if group > 1:  # K/V head g serves query heads g*group .. (g+1)*group - 1
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.unsqueeze(1), dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, sq, self.n_heads * self.head_dim))
