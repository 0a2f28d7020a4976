"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

The rate is a pure function of the global step, so resuming only needs the step count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step) for step = 0 .. total_steps - 1.

    Warm-up: lr(s) = base_lr * (s + 1) / warmup_steps for s < warmup_steps, so the first step is
    not wasted at lr 0 and step warmup_steps - 1 reaches base_lr.
    Decay: cosine from base_lr at step warmup_steps to base_lr * min_lr_ratio at the last step;
    later steps stay at the floor.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps - 1
        progress = 1.0 if decay_steps <= 0 else min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every param group's lr for `step`; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, float | int]:
        return asdict(self)
