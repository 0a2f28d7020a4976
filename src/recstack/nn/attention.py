"""Attention blocks: masks, multi-head softmax self-attention, point-wise FFN, a Transformer block.

Shapes: B batch, T sequence length, D model width, H heads. Masks are boolean with True = "may
attend"; an additive float bias (e.g. a relative attention bias) may come beside them.
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.nn.reproducible import LayerNorm, attention


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """[B, T] bool (True = real item) -> [B, T, T] bool, True where query t may attend key s.

    Query t sees keys s <= t that are real items. A padding query would see nothing, which makes
    softmax return NaN, so every position may always attend to itself (its output is ignored).
    """
    t = valid.shape[1]
    lower = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    mask = lower.unsqueeze(0) & valid.unsqueeze(1)
    return mask | torch.eye(t, dtype=torch.bool, device=valid.device).unsqueeze(0)


class MultiHeadSelfAttention(nn.Module):
    """Softmax self-attention (Vaswani et al. 2017) over [B, T, D] with a [B, T, T] boolean mask.

    bias: optional additive [B, T, T] or [B, H, T, T] logits bias (relative attention bias).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask.unsqueeze(1)  # [B, 1, T, T] broadcast over heads
        if bias is not None:
            bias = bias.unsqueeze(1) if bias.dim() == 3 else bias
            attn_mask = bias.masked_fill(~attn_mask, float("-inf"))
        # = F.scaled_dot_product_attention, with the same bits at any CPU thread count (nn/reproducible.py)
        y = attention(q, k, v, attn_mask, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class PointwiseFeedForward(nn.Module):
    """Position-wise two-layer MLP: [B, T, D] -> [B, T, D] (GELU or ReLU, dropout after each layer)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Self-attention + FFN with residuals; `norm_first` picks pre-LN (x + f(LN x)) or post-LN (LN(x + f x)).

    forward(x [B, T, D], mask [B, T, T] bool, bias [B, T, T] | None) -> [B, T, D].
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "gelu",
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadSelfAttention(dim, heads, attn_dropout)
        self.ffn = PointwiseFeedForward(dim, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = LayerNorm(dim, eps=eps), LayerNorm(dim, eps=eps)  # thread-count invariant on CPU
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), mask, bias))
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.drop(self.attn(x, mask, bias)))
        return self.norm2(x + self.ffn(x))
