"""A dense mixture of Wukong interaction experts over feature tokens (Kunlun's global interaction,
METHODS.md §2.9; Wukong: Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation",
ICML 2024).

One Wukong expert on tokens X [n_in, D]:
  FMB (factorization machine block): the optimized FM X (Xᵀ Y), Y [n_in, r] learned (the pairwise
      dot products X Xᵀ projected to rank r without forming them), flattened, LayerNorm, MLP ->
      n_fm new tokens;
  LCB (linear compression block): L X, L [n_out − n_fm, n_in] -> the remaining tokens.
WukongMoE runs E such experts with stacked weights (one einsum per step, no loop over experts) and
mixes their [n_out, D] outputs with a softmax gate computed from the mean token (a dense mixture:
every expert runs, so the FLOPs do not depend on routing).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _stacked(*shape: int, fan_in: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))


class WukongMoE(nn.Module):
    """x [B, n_in, D] -> [B, n_out, D].

    experts: E;  rank: r of the FM projection;  hidden: MLP width of the FMB;  fm_tokens: n_fm (default
    half of n_out, the rest from the LCB).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        dim: int,
        experts: int = 2,
        rank: int = 4,
        hidden: int = 64,
        fm_tokens: int | None = None,
    ) -> None:
        super().__init__()
        n_fm = (n_out + 1) // 2 if fm_tokens is None else fm_tokens
        if not 0 <= n_fm <= n_out or experts < 1:
            raise ValueError(f"WukongMoE: need 0 <= fm_tokens <= n_out ({n_out}) and experts >= 1")
        self.n_out, self.n_fm, self.dim = n_out, n_fm, dim
        self.y = _stacked(experts, n_in, rank, fan_in=n_in)
        self.norm = nn.LayerNorm(n_in * rank)
        self.w1 = _stacked(experts, n_in * rank, hidden, fan_in=n_in * rank)
        self.b1 = nn.Parameter(torch.zeros(experts, hidden))
        self.w2 = _stacked(experts, hidden, n_fm * dim, fan_in=hidden)
        self.b2 = nn.Parameter(torch.zeros(experts, n_fm * dim))
        self.lcb = _stacked(experts, n_out - n_fm, n_in, fan_in=n_in)
        self.gate = nn.Linear(dim, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        projected = torch.einsum("bnd,enr->bedr", x, self.y)  # Xᵀ Y per expert [B, E, D, r]
        fm = torch.einsum("bmd,bedr->bemr", x, projected).flatten(2)  # X (Xᵀ Y) [B, E, n_in·r]
        h = torch.relu(torch.einsum("bei,eih->beh", self.norm(fm), self.w1) + self.b1)
        fm_tokens = (torch.einsum("beh,eho->beo", h, self.w2) + self.b2).view(b, -1, self.n_fm, self.dim)
        lcb_tokens = torch.einsum("eon,bnd->beod", self.lcb, x)  # [B, E, n_out − n_fm, D]
        experts = torch.cat([fm_tokens, lcb_tokens], dim=2)  # [B, E, n_out, D]
        gate = torch.softmax(self.gate(x.mean(1)), dim=-1)  # [B, E]
        return torch.einsum("be,beod->bod", gate, experts)
