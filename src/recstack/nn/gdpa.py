"""GDPA: generalized dot-product attention (Kunlun, METHODS.md §2.9).

InterFormer's personalised FFN (every sequence token transformed by weights generated from the
non-sequence context) rewritten as multi-head cross-attention of the sequence onto the context summary:

    GDPA_h(Q, K, V) = Act_h(Q Kᵀ / tau) V,   Q = W_q S (sequence tokens), K, V = W_k X_sum, W_v X_sum

With Act = identity this is exactly S·(W_q W_kᵀ-weighted sum of context values), i.e. a rank-C linear
map of each token generated from the context; the activation makes it non-linear and lets an
attention kernel fuse it. Choices (arguments; the Kunlun ranker exposes them as flags):
- activation "softmax" (the re-implementation) or "silu" [I]: HSTU-style SiLU(·) / N, N = number of
  valid context keys.
- temperature "maxlen" (tau = padded sequence length, as described) or "sqrt_dim" [I] (tau = sqrt(Dh)).
`fused=True` runs the softmax case through F.scaled_dot_product_attention (a fused kernel on GPU; the
test checks it equals the explicit matmul path, which stays the reference and the CPU default).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.sliding_window import masked_softmax

GdpaActivation = Literal["softmax", "silu"]
GdpaTemperature = Literal["maxlen", "sqrt_dim"]


class GDPA(nn.Module):
    """forward(x [B, T, D], context [B, C, Dc], context_mask [B, C] | None, valid [B, T] | None,
    max_len: int | None) -> [B, T, D]. max_len: the nominal sequence length for tau = "maxlen" (default
    T; pass it when T was trimmed per batch, so a row's output does not depend on its batch).

    Output rows of padding queries (valid False) are 0, so the residual leaves padding untouched.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        activation: GdpaActivation = "softmax",
        temperature: GdpaTemperature = "maxlen",
        fused: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if activation not in ("softmax", "silu") or temperature not in ("maxlen", "sqrt_dim"):
            raise ValueError(f"GDPA: unknown activation {activation!r} or temperature {temperature!r}")
        self.heads, self.activation, self.temperature, self.fused = heads, activation, temperature, fused
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        max_len: int | None = None,
    ) -> torch.Tensor:
        b, t, d = x.shape
        c, dh = context.shape[1], d // self.heads
        q = self.q(x).view(b, t, self.heads, dh).transpose(1, 2)  # [B, H, T, Dh]
        k, v = self.kv(context).view(b, c, 2, self.heads, dh).permute(2, 0, 3, 1, 4)  # [B, H, C, Dh] each
        tau = float(max_len or t) if self.temperature == "maxlen" else math.sqrt(dh)
        mask = (torch.ones(b, c, dtype=torch.bool, device=x.device) if context_mask is None else context_mask.bool())[
            :, None, None, :
        ]
        if self.fused and self.activation == "softmax":  # rows without any valid key give 0, as below
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / tau)
            y = self.out(torch.nan_to_num(y).transpose(1, 2).reshape(b, t, d))
            return y if valid is None else y * valid.unsqueeze(-1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / tau  # [B, H, T, C]
        if self.activation == "softmax":
            weights = masked_softmax(scores, mask)
        else:
            count = mask.sum(-1, keepdim=True).clamp(min=1)
            weights = F.silu(scores).masked_fill(~mask, 0.0) / count
        y = self.out(torch.matmul(weights, v).transpose(1, 2).reshape(b, t, d))
        return y if valid is None else y * valid.unsqueeze(-1)
