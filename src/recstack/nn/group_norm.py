"""GroupLayerNorm (MTFM, METHODS.md §2.6): a separate LayerNorm (own scale and shift) per token type, so
heterogeneous tokens (history, real-time, target, ...) keep their own statistics scale in a shared stack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupLayerNorm(nn.Module):
    """forward(x [B, S, D], types [S] or [B, S] long in 0..num_groups-1) -> [B, S, D]:
    LayerNorm over D, then weight[types] * x_hat + bias[types] (all types in one vectorised pass)."""

    def __init__(self, dim: int, num_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_groups, dim))
        self.bias = nn.Parameter(torch.zeros(num_groups, dim))

    def forward(self, x: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return normed * self.weight[types] + self.bias[types]
