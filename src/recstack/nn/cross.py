"""DCNv2 cross network (Wang et al., "DCN V2", WWW 2021).

Full-rank layer:  x_{l+1} = x0 * (W x_l + b) + x_l                      (W: [D, D])
Low-rank mixture: x_{l+1} = sum_e G_e(x_l) * x0 * (U_e g(C_e g(V_e^T x_l)) + b) + x_l
                  (V_e, U_e: [D, r]; C_e: [r, r]; g = tanh; G = softmax gate over experts)
The mixture ("DCN-Mix") is the paper's cheaper variant for wide inputs; one expert without the
inner r x r map is the plain low-rank layer. Shapes: every layer maps [N, D] -> [N, D].
"""

from __future__ import annotations

import torch
from torch import nn


class CrossLayer(nn.Module):
    """One full-rank DCNv2 cross layer: (x0 [N, D], x [N, D]) -> [N, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class LowRankMixtureCrossLayer(nn.Module):
    """DCN-Mix cross layer with `num_experts` low-rank (rank `rank`) experts: (x0, x) [N, D] -> [N, D]."""

    def __init__(self, dim: int, rank: int, num_experts: int = 4) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.c = nn.Parameter(torch.empty(num_experts, rank, rank))
        self.u = nn.Parameter(torch.empty(num_experts, rank, dim))
        for weight in (self.v, self.c, self.u):
            nn.init.xavier_uniform_(weight)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("nd,edr->ner", x, self.v))  # [N, E, r]
        low = torch.tanh(torch.einsum("ner,ers->nes", low, self.c))  # [N, E, r]
        experts = x0.unsqueeze(1) * (torch.einsum("ner,erd->ned", low, self.u) + self.bias)  # [N, E, D]
        gates = torch.softmax(self.gate(x), dim=-1).unsqueeze(-1)  # [N, E, 1]
        return (gates * experts).sum(1) + x


class CrossNetwork(nn.Module):
    """`num_layers` stacked cross layers: x0 [N, D] -> [N, D].

    low_rank=None: full-rank layers; low_rank=r: low-rank mixture layers with `num_experts` experts.
    """

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None, num_experts: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossLayer(dim) if low_rank is None else LowRankMixtureCrossLayer(dim, low_rank, num_experts)
            for _ in range(num_layers)
        )
        self.out_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
