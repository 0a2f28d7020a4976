"""MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018): shared expert MLPs, one softmax gate per task mixing them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.nn.mlp import MLP


class MMoE(nn.Module):
    """x [N, D] -> per task [N, hidden[-1]] (stacked as [num_tasks, N, hidden[-1]]).

    Each expert is an MLP ending on its last hidden block (activation included); each task's gate is
    a linear map of x followed by a softmax over the experts.
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_experts: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            MLP(in_dim, hidden, out_dim=None, activation=activation, dropout=dropout) for _ in range(num_experts)
        )
        self.gates = nn.Linear(in_dim, num_tasks * num_experts)
        self.num_tasks, self.num_experts, self.out_dim = num_tasks, num_experts, hidden[-1]

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """[num_tasks, N, num_experts], each row sums to 1."""
        logits = self.gates(x).view(x.shape[0], self.num_tasks, self.num_experts)
        return torch.softmax(logits, dim=-1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [N, E, H]; a loop over experts
        return torch.einsum("tne,neh->tnh", self.gate_weights(x), experts)
