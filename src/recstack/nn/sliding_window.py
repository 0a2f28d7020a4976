"""Sliding-window (local) self-attention over a history, plus the dense reference it must equal.

Query t sees the keys in its window: causal: t − W < s <= t (W keys); two-sided: |t − s| < W (2W − 1
keys); padding keys never, and itself always (so a padding query never divides by zero; its output
is ignored).

Complexity (B batch, H heads, T length, Dh head width, K = keys per window):
- `sliding_window_attention` (unfold): the keys / values are padded and unfolded into [B, H, T, Dh, K]
  windows, then two batched matmuls: O(B·H·T·K·Dh) multiply-adds and O(B·H·T·K) scores — linear in T.
- `dense_attention` with `window_mask`: O(B·H·T²·Dh) multiply-adds and O(B·H·T²) scores, whatever W.
Both are plain matmul / einsum, so torch.utils.flop_counter sees the difference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.rote import rotate


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to `mask`; a row with no allowed key gets all-zero weights."""
    weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
    return weights.masked_fill(~mask, 0.0)


def window_mask(valid: torch.Tensor, window: int | None, causal: bool = True) -> torch.Tensor:
    """valid [B, T] bool -> [B, T, T] bool, True where query t may attend key s (window None = unlimited)."""
    t = valid.shape[1]
    i = torch.arange(t, device=valid.device)
    distance = i.unsqueeze(1) - i.unsqueeze(0)  # query − key
    band = torch.ones(t, t, dtype=torch.bool, device=valid.device)
    if causal:
        band &= distance >= 0
    if window is not None:
        band &= distance.abs() < window
    mask = band.unsqueeze(0) & valid.unsqueeze(1)
    return mask | torch.eye(t, dtype=torch.bool, device=valid.device)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q, k, v [B, H, T, Dh]; mask [B, T, T] bool -> [B, H, T, Dh]: softmax(q kᵀ / sqrt(Dh)) v over the mask."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.matmul(masked_softmax(scores, mask.unsqueeze(1)), v)


def sliding_window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, window: int, causal: bool = True
) -> torch.Tensor:
    """q, k, v [B, H, T, Dh]; valid [B, T] bool -> [B, H, T, Dh]; equals dense_attention with window_mask.

    When the window covers the whole sequence the dense path is cheaper and is used instead.
    """
    t = q.shape[2]
    left, right = window - 1, (0 if causal else window - 1)
    size = left + right + 1
    if size >= t:
        return dense_attention(q, k, v, window_mask(valid, window, causal))
    # [B, H, T + left + right, Dh] -> windows [B, H, T, Dh, K]; slot `left` of each window is the query itself
    k_win = F.pad(k, (0, 0, left, right)).unfold(2, size, 1)
    v_win = F.pad(v, (0, 0, left, right)).unfold(2, size, 1)
    key_valid = F.pad(valid, (left, right), value=False).unfold(1, size, 1)  # [B, T, K]
    key_valid = key_valid.clone()
    key_valid[:, :, left] = True
    scores = torch.einsum("bhtd,bhtdk->bhtk", q, k_win) / math.sqrt(q.shape[-1])
    weights = masked_softmax(scores, key_valid.unsqueeze(1))
    return torch.einsum("bhtk,bhtdk->bhtd", weights, v_win)


class SlidingWindowSelfAttention(nn.Module):
    """Multi-head self-attention over a history with rotary (ROTE) phases and an optional window.

    forward(x [B, T, D], valid [B, T] bool, phases [B, T] | None) -> [B, T, D].
    window None: full attention (dense); else the unfold path above.
    """

    def __init__(
        self, dim: int, heads: int, window: int | None, causal: bool = True, rope_base: float = 10000.0
    ) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim {dim} must split into {heads} heads of even width")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.heads, self.window, self.causal, self.rope_base = heads, window, causal, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if phases is not None:
            q, k = rotate(q, phases, self.rope_base), rotate(k, phases, self.rope_base)
        if self.window is None:
            y = dense_attention(q, k, v, window_mask(valid, None, self.causal))
        else:
            y = sliding_window_attention(q, k, v, valid, self.window, self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))
