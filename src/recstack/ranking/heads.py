"""Multi-task heads: one tower + sigmoid head per task, and the task-weighted BCE loss.

Rankers output logits per task; `score` and the metrics apply the sigmoid. Labels are floats in
[0, 1] ([N] per task).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.mlp import MLP


class TaskTowers(nn.Module):
    """Per-task MLP towers: inputs [num_tasks, N, D] (one representation per task, e.g. from MMoE) or
    [N, D] (shared by all tasks) -> {task: logits [N]}."""

    def __init__(self, tasks: Sequence[str], in_dim: int, hidden: Sequence[int] = (), dropout: float = 0.0) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.towers = nn.ModuleDict({task: MLP(in_dim, hidden, out_dim=1, dropout=dropout) for task in self.tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        per_task = x if x.dim() == 3 else x.unsqueeze(0).expand(len(self.tasks), *x.shape)
        return {task: self.towers[task](per_task[t]).squeeze(-1) for t, task in enumerate(self.tasks)}


def multitask_bce(
    logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], weights: dict[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """{"loss": sum_t w_t * BCE_t, "<task>": BCE_t} with BCE averaged over the N rows of each task."""
    weights = weights or {}
    out: dict[str, torch.Tensor] = {}
    total = None
    for task, task_logits in logits.items():
        bce = F.binary_cross_entropy_with_logits(task_logits.float(), labels[task].float())
        out[task] = bce.detach()
        term = weights.get(task, 1.0) * bce
        total = term if total is None else total + term
    out["loss"] = total if total is not None else torch.zeros(())
    return out


def probabilities(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {task: torch.sigmoid(value.float()) for task, value in logits.items()}
