"""HSP: hierarchical seed pooling, and SumKronLinear (Kunlun, METHODS.md §2.9).

HSP summarises a history [B, T, D] into M tokens:
  1. an over-complete set of S > M learnable seed vectors;
  2. the seeds cross-attend to the whole (valid part of the) sequence, multi-head, like PMA
     (Set Transformer), with a residual on the seeds and a LayerNorm;
  3. SumKronLinear compresses the S pooled seeds to M tokens: Y_b = Σ_{i=1..k} Z_iᵀ X_b W_i,
     Z_i [S, M], W_i [D, E].
SumKronLinear is the linear map vec(Y) = (Σ_i Z_iᵀ ⊗ W_iᵀ) vec(X) (row-major vec) of shape [M·E, S·D],
with k(S·M + D·E) parameters instead of S·D·M·E, never materialised: Z first (cheaper when M < S),
O(B·k·M·D·(S + E)) multiply-adds; `full_matrix()` builds the explicit matrix for tests.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from recstack.nn.sliding_window import masked_softmax


class SumKronLinear(nn.Module):
    """x [B, S, D] -> [B, M, E]:  Y_b = Σ_i Z_iᵀ X_b W_i  (+ bias [M, E])."""

    def __init__(self, seeds: int, tokens: int, dim: int, out_dim: int | None = None, rank: int = 2) -> None:
        super().__init__()
        out_dim = out_dim or dim
        if rank < 1:
            raise ValueError(f"SumKronLinear rank must be >= 1, got {rank}")
        # Z_i scaled so Σ_i Z_iᵀ X W_i starts at the variance of X (k terms, S seeds, D channels summed).
        self.z = nn.Parameter(torch.randn(rank, seeds, tokens) / math.sqrt(seeds * rank))
        self.w = nn.Parameter(torch.randn(rank, dim, out_dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(tokens, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compressed = torch.einsum("ksm,bsd->bkmd", self.z, x)  # [B, k, M, D]
        return torch.einsum("bkmd,kde->bme", compressed, self.w) + self.bias  # [B, M, E]

    def full_matrix(self) -> torch.Tensor:
        """The explicit [M·E, S·D] matrix: y.flatten(1) = x.flatten(1) @ full_matrix().T + bias.flatten()."""
        return cast(torch.Tensor, sum(torch.kron(self.z[i].T, self.w[i].T) for i in range(self.z.shape[0])))


class HSP(nn.Module):
    """forward(x [B, T, D], valid [B, T] bool) -> [B, tokens, out_dim]; rows with no valid event pool zeros."""

    def __init__(
        self, dim: int, heads: int, seeds: int, tokens: int, out_dim: int | None = None, rank: int = 2
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if seeds <= tokens:
            raise ValueError(f"HSP needs an over-complete seed set: seeds ({seeds}) > tokens ({tokens})")
        self.heads = heads
        self.seeds = nn.Parameter(torch.randn(seeds, dim) * 0.02)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.compress = SumKronLinear(seeds, tokens, dim, out_dim, rank)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        s, dh = self.seeds.shape[0], d // self.heads
        q = self.q(self.seeds).view(s, self.heads, dh).transpose(0, 1)  # [H, S, Dh], batch-free
        k, v = self.kv(x).view(b, t, 2, self.heads, dh).permute(2, 0, 3, 1, 4)  # [B, H, T, Dh]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh)  # [B, H, S, T]
        weights = masked_softmax(scores, valid[:, None, None, :])
        pooled = self.out(torch.matmul(weights, v).transpose(1, 2).reshape(b, s, d))  # [B, S, D]
        return self.compress(self.norm(self.seeds + pooled))
