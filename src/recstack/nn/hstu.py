"""HSTU: the pointwise-attention block of Zhai et al. 2024, "Actions Speak Louder than Words:
Trillion-Parameter Sequential Transducers for Generative Recommendations" (METHODS.md §1.2).

    U, V, Q, K = split(SiLU(f1(X)))
    A          = SiLU(alpha · Q Kᵀ + rab) · scale      (masked to 0 outside the causal mask; no softmax)
    Y          = f2(Norm(A V) ⊙ U) + X

`hstu_attention` is the pure-PyTorch reference op; a fused GPU kernel may sit beside it later.
Interpretations, as arguments (mirrored by the retriever's config):
- input_norm: LayerNorm X before f1 (Meta's code does; the paper's equation does not show it).
- normalization: scale = 1 / N with N = the padded length ("max_len", Meta's code), the user's
  number of real items ("length"), or the number of keys query i sees ("causal", a mean).
- alpha: logit scale (1 in Meta's research code; 1/sqrt(d_qk) in its newer kernels).
- Norm(A V) is a LayerNorm without learned scale/shift, as in Meta's code.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Normalization = Literal["max_len", "length", "causal"]


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    rab: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
    alpha: float = 1.0,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Pointwise (SiLU) attention.

    q, k:  [B, H, T, Dqk];  v: [B, H, T, Dv]
    mask:  [B, T, T] bool, True where query i may attend key j (shared by heads)
    rab:   [B or 1, T, T] (or [B, H, T, T]) additive bias before the SiLU, or None
    scale: a float, or a tensor broadcastable to [B, T, T] (e.g. [B, 1, 1] = 1 / length per user)
    Returns [B, H, T, Dv]:  out[b,h,i] = sum_j mask[b,i,j] · SiLU(alpha q_i·k_j + rab[b,i,j]) · scale · v_j
    """
    logits = torch.matmul(q, k.transpose(-1, -2)) * alpha  # [B, H, T, T]
    if rab is not None:
        logits = logits + (rab.unsqueeze(1) if rab.dim() == 3 else rab)
    if isinstance(scale, torch.Tensor):
        scale = scale.unsqueeze(1) if scale.dim() == 3 else scale
    weights = F.silu(logits) * scale
    weights = weights.masked_fill(~mask.unsqueeze(1), 0.0)
    if dropout and training:
        weights = F.dropout(weights, dropout, training=True)
    return torch.matmul(weights, v)


def attention_scale(
    mask: torch.Tensor, normalization: Normalization, max_len: int | None = None
) -> float | torch.Tensor:
    """1 / N from a [B, T, T] causal mask of right-aligned rows (the last query sees every real item).

    "max_len" uses `max_len` (default T), so trimming left padding does not change the result.
    """
    if normalization == "max_len":
        return 1.0 / (max_len or mask.shape[-1])
    if normalization == "length":
        return 1.0 / mask[:, -1, :].sum(-1).clamp(min=1).to(torch.float32).view(-1, 1, 1)
    return 1.0 / mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)


class HSTUBlock(nn.Module):
    """One HSTU layer. forward(x [B, T, D], mask [B, T, T] bool, rab [B|1, T, T] | None) -> [B, T, D].

    heads H, attention_dim Dqk per head (Q, K), linear_dim Dv per head (U, V); max_len is N for
    normalization "max_len" (default: the padded length T of each call).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 1,
        attention_dim: int = 32,
        linear_dim: int = 32,
        dropout: float = 0.2,
        attn_dropout: float = 0.0,
        normalization: Normalization = "max_len",
        input_norm: bool = True,
        alpha: float = 1.0,
        max_len: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.heads, self.attention_dim, self.linear_dim = heads, attention_dim, linear_dim
        self.normalization, self.alpha, self.attn_dropout = normalization, alpha, attn_dropout
        self.input_norm = nn.LayerNorm(dim, eps=eps) if input_norm else nn.Identity()
        self.f1 = nn.Linear(dim, heads * (2 * linear_dim + 2 * attention_dim))
        self.output_norm = nn.LayerNorm(heads * linear_dim, eps=eps, elementwise_affine=False)
        self.f2 = nn.Linear(heads * linear_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rab: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        hv, hqk = self.heads * self.linear_dim, self.heads * self.attention_dim
        u, v, q, k = F.silu(self.f1(self.input_norm(x))).split([hv, hv, hqk, hqk], dim=-1)
        q, k = (z.view(b, t, self.heads, self.attention_dim).transpose(1, 2) for z in (q, k))
        v = v.view(b, t, self.heads, self.linear_dim).transpose(1, 2)
        scale = attention_scale(mask, self.normalization, self.max_len)
        attn = hstu_attention(q, k, v, mask, rab, scale, self.alpha, self.attn_dropout, self.training)
        attn = attn.transpose(1, 2).reshape(b, t, hv)
        return x + self.f2(self.drop(self.output_norm(attn) * u))
