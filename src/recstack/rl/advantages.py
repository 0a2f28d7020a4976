"""Group-relative advantages (GRPO, DeepSeekMath arXiv 2402.03300; per reward as in Taiji/POPO, METHODS.md §2.1).

A step samples B groups of G rollouts (one group per prompt). Each rollout's advantage is its reward
relative to its own group:

    A[b, g] = (r[b, g] − mean_g r[b, :]) / (std_g r[b, :] + eps)        (scale=True, GRPO)
    A[b, g] =  r[b, g] − mean_g r[b, :]                                 (scale=False, Dr. GRPO)

With K rewards, `rewards` is [B, G, K] and each reward is normalised on its own (POPO's per-reward
advantages). std is the unbiased sample std over the G rollouts, as in trl's GRPOTrainer.
"""

from __future__ import annotations

import torch

from recstack.errors import DataError


def check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """Validate [B, G] or [B, G, K] finite rewards with G >= 2; returns them as float32 [B, G, K]."""
    if rewards.dim() == 2:
        rewards = rewards.unsqueeze(-1)
    if rewards.dim() != 3:
        raise DataError(f"rewards must be [B, G] or [B, G, K], got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise DataError(f"a group needs at least 2 rollouts to compare, got G = {rewards.shape[1]}")
    if not torch.isfinite(rewards).all():
        raise DataError("rewards contain NaN or inf")
    return rewards.float()


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """rewards [B, G] or [B, G, K] -> advantages of the same shape, normalised within each group and reward.

    A group whose rollouts all got the same reward has advantage 0 everywhere (it teaches nothing).
    """
    squeeze = rewards.dim() == 2
    r = check_rewards(rewards)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    return centred.squeeze(-1) if squeeze else centred


def combine_rewards(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """rewards [B, G, K], weights [K] or [B, K] -> weighted sum [B, G] (trl's multi-reward rule: sum, then normalise)."""
    r = check_rewards(rewards)
    w = weights.to(r.dtype)
    if w.dim() == 1:
        return (r * w).sum(-1)
    return (r * w.unsqueeze(1)).sum(-1)
