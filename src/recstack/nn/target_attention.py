"""Target attention (DIN activation unit; Zhou et al., "Deep Interest Network", KDD 2018).

The candidate (query) scores each history item (key) with an MLP over [q, k, q - k, q * k]; the
history is summed with those weights. As in DIN the weights are not normalised by default (the sum
keeps the intensity of interest); `softmax=True` normalises them over the valid positions instead.
Our interpretation [I]: the paper's outer-product term is replaced by q - k and q * k (as in its
public code), and the activation is a plain one from `nn/mlp.py` (not Dice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.mlp import MLP


class TargetAttention(nn.Module):
    """(query [N, D], keys [N, T, D], mask [N, T] bool: True = real item) -> [N, D]."""

    def __init__(
        self, dim: int, hidden: Sequence[int] = (36,), activation: str = "relu", softmax: bool = False
    ) -> None:
        super().__init__()
        self.score = MLP(4 * dim, hidden, out_dim=1, activation=activation)
        self.softmax = softmax

    def logits(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """[N, T] = MLP([q, k, q - k, q * k]), with the first layer split by input block so that the
        [N, T, 4D] concatenation is never built: W [q; k; q-k; q*k] = (Wq + Wd) q + (Wk - Wd) k + Wp (q*k)."""
        first, rest = cast(nn.Linear, self.score.layers[0]), self.score.layers[1:]
        w_q, w_k, w_d, w_p = first.weight.split(query.shape[-1], dim=1)  # [H, D] each
        hidden = (
            F.linear(query, w_q + w_d, first.bias).unsqueeze(1)  # [N, 1, H]
            + F.linear(keys, w_k - w_d)
            + F.linear(query.unsqueeze(1) * keys, w_p)
        )  # [N, T, H]
        return rest(hidden).squeeze(-1)

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, T] attention weights; exactly 0 at padded positions."""
        logits = self.logits(query, keys)
        if self.softmax:
            weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
            return weights.nan_to_num(0.0)  # a row with no history has all -inf -> 0 weights
        return logits.masked_fill(~mask, 0.0)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Padded positions have weight exactly 0, so (finite) padded keys add nothing.
        return torch.einsum("nt,ntd->nd", self.weights(query, keys, mask), keys)
