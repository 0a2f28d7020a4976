"""GRPO policy loss with several rewards and a pluggable weighting (Taiji's POPO, METHODS.md §2.1;
GRPO: Shao et al., DeepSeekMath, arXiv 2402.03300).

    grpo = MultiRewardGRPO(GRPOConfig(kl_coef=0.04), build("weighting", "mgda"), policy_params)
    out = grpo.loss(logp, mask, rewards, old_logp=None, ref_logp=ref)   # out.loss: scalar with autograd
    out.loss.backward()

Shapes: B groups (prompts) of G rollouts; N = B·G rows in group-major order (row b·G + g); T tokens.
    logp, old_logp, ref_logp, mask: [N, T] per-token log-probabilities of each rollout's completion
    (mask 1 on completion tokens); rewards: [B, G, K].

Per token, with ratio ρ = exp(logp − old_logp) and the rollout's advantage A:
    loss_k = −min(ρ A_k, clip(ρ, 1 − clip_low, 1 + clip_high) A_k)
    kl     = exp(ref − logp) − (ref − logp) − 1            (k3 estimator, always >= 0)
reduced over tokens by `loss_type` ("grpo": mean over each sequence's tokens, then over sequences;
"bnpo": mean over all tokens; "dr_grpo": sum / (N · T)). Without `old_logp` (one update per batch of
rollouts) ρ = 1 but keeps its gradient, as in trl.

POPO: A_k are per-reward group-normalised advantages (rl/advantages.py); the total is
Σ_k w_k loss_k + kl_coef · kl, with w from the weighting strategy. "mgda" gets the gradients
g_k = ∇ loss_k over the trainable parameters (K extra backward passes through the retained graph).

trl (>= 0.14) computes the same per-token loss and k3 KL inside GRPOTrainer.compute_loss, which is not
exposed as a function, and its multi-reward support is fixed `reward_weights` summed before the group
normalisation (our reward_norm: sum). The per-reward gradient weighting (mgda, cv) is ours, so this
module re-states trl's formulas in plain torch instead of depending on trl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from recstack.errors import ConfigError, DataError
from recstack.rl.advantages import check_rewards, combine_rewards, group_advantages
from recstack.rl.weighting import WeightingStrategy


@dataclass
class GRPOConfig:
    clip_low: float = 0.2  # ε of the clipped ratio (lower side)
    clip_high: float = 0.2  # upper side (DAPO's clip-higher raises it)
    kl_coef: float = 0.04
    """β of the KL term to the reference policy (trl's former default; Taiji does not give one) [I]"""
    kl_estimator: Literal["k3", "k1"] = "k3"
    loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo"
    scale_rewards: bool = True  # divide by the group std (False: Dr. GRPO)
    reward_norm: Literal["per_reward", "sum"] = "per_reward"
    """per_reward: normalise each reward in its group, then weight (POPO); sum: weight the raw rewards,
    then normalise the sum (trl's multi-reward rule; not with mgda)"""
    eps: float = 1e-4  # added to the group std

    def __post_init__(self) -> None:
        for key in ("clip_low", "clip_high", "kl_coef", "eps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"grpo.{key} must be >= 0, got {getattr(self, key)!r}")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π: [N, T] -> [N, T]."""
    delta = ref_logp - logp
    if estimator == "k3":
        return torch.exp(delta) - delta - 1.0
    if estimator == "k1":
        return -delta
    raise ConfigError(f"grpo.kl_estimator: {estimator!r} is not one of 'k3', 'k1'")


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float
) -> torch.Tensor:
    """Per-token PPO/GRPO loss. logp, old_logp [N, T]; advantages [N] or [N, K] -> [N, T] or [N, T, K]."""
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    if advantages.dim() == 2:
        ratio, clipped, advantages = ratio.unsqueeze(-1), clipped.unsqueeze(-1), advantages.unsqueeze(1)
    else:
        advantages = advantages.unsqueeze(1)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def token_weights(mask: torch.Tensor, loss_type: str) -> torch.Tensor:
    """[N, T] weights w such that the loss is Σ_{n,t} w[n, t] · per_token[n, t]."""
    mask = mask.float()
    n, t = mask.shape
    if loss_type == "grpo":
        return mask / (mask.sum(1, keepdim=True).clamp_min(1.0) * n)
    if loss_type == "bnpo":
        return mask / mask.sum().clamp_min(1.0)
    if loss_type == "dr_grpo":
        return mask / float(n * t)
    raise ConfigError(f"grpo.loss_type: {loss_type!r} is not one of 'grpo', 'bnpo', 'dr_grpo'")


@dataclass
class GRPOOutput:
    loss: torch.Tensor  # scalar, with autograd
    weights: torch.Tensor  # [K] reward weights used (the mean over groups when per group)
    stats: dict[str, Any] = field(default_factory=dict)


class MultiRewardGRPO:
    """The GRPO objective over K rewards with a WeightingStrategy (fixed, mgda, cv)."""

    def __init__(
        self, config: GRPOConfig, weighting: WeightingStrategy, params: Sequence[nn.Parameter] | None = None
    ) -> None:
        self.config, self.weighting = config, weighting
        self.params = [p for p in (params or []) if p.requires_grad]
        if weighting.needs_gradients and not self.params:
            raise ConfigError(f"weighting {weighting.name!r} needs the trainable parameters of the policy")
        if weighting.needs_gradients and config.reward_norm == "sum":
            raise ConfigError(
                f"weighting {weighting.name!r} needs per-reward advantages; set grpo.reward_norm: per_reward"
            )

    def per_reward_gradients(self, losses: torch.Tensor) -> torch.Tensor:
        """losses [K] (sharing one graph) -> flat gradients [K, P] over the trainable parameters."""
        rows = []
        for k in range(losses.shape[0]):  # K backward passes through the retained graph
            grads = torch.autograd.grad(losses[k], self.params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(self.params, grads)])
            )
        return torch.stack(rows).detach()

    def loss(
        self,
        logp: torch.Tensor,
        mask: torch.Tensor,
        rewards: torch.Tensor,
        old_logp: torch.Tensor | None = None,
        ref_logp: torch.Tensor | None = None,
    ) -> GRPOOutput:
        cfg = self.config
        r = check_rewards(rewards)
        b, g, k = r.shape
        if logp.shape != mask.shape or logp.dim() != 2 or logp.shape[0] != b * g:
            raise DataError(
                f"logp and mask must be [N = B·G = {b * g}, T], got {tuple(logp.shape)} and {tuple(mask.shape)}"
            )
        old = logp.detach() if old_logp is None else old_logp.detach()
        tw = token_weights(mask, cfg.loss_type)
        if cfg.reward_norm == "sum":
            w = self.weighting.weights(r).to(logp.device)
            adv = group_advantages(combine_rewards(r, w.cpu()), cfg.scale_rewards, cfg.eps).reshape(-1)
            per_token = clipped_surrogate(logp, old, adv.to(logp.device), cfg.clip_low, cfg.clip_high)
            per_reward = torch.full((k,), float("nan"))
            policy = (per_token * tw).sum()
        else:
            adv = group_advantages(r, cfg.scale_rewards, cfg.eps).reshape(b * g, k).to(logp.device)
            per_token = clipped_surrogate(logp, old, adv, cfg.clip_low, cfg.clip_high)  # [N, T, K]
            per_seq = (per_token * tw.unsqueeze(-1)).sum(1)  # [N, K]
            losses = per_seq.sum(0)  # [K]
            gradients = self.per_reward_gradients(losses) if self.weighting.needs_gradients else None
            w = self.weighting.weights(r, gradients, losses.detach()).to(logp.device)
            rows = w.unsqueeze(0) if w.dim() == 1 else w.repeat_interleave(g, dim=0)
            policy = (per_seq * rows).sum()
            per_reward = losses.detach().cpu()
        total = policy
        kl_value = 0.0
        if ref_logp is not None and cfg.kl_coef > 0:
            kl = (kl_penalty(logp, ref_logp.detach(), cfg.kl_estimator) * tw).sum()
            total = total + cfg.kl_coef * kl
            kl_value = float(kl.detach())
        ratio = torch.exp(logp.detach() - old)
        clipped = ((ratio < 1 - cfg.clip_low) | (ratio > 1 + cfg.clip_high)).float()
        weights = (w if w.dim() == 1 else w.mean(0)).detach().cpu()
        stats = {
            "reward_mean": r.mean(dim=(0, 1)).tolist(),
            "reward_std": r.std(dim=1).mean(0).tolist(),
            "weights": weights.tolist(),
            "policy_loss": per_reward.tolist(),
            "kl": kl_value,
            "clip_fraction": float((clipped * mask).sum() / mask.sum().clamp_min(1)),
        }
        return GRPOOutput(total, weights, stats)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        logp: torch.Tensor,
        mask: torch.Tensor,
        rewards: torch.Tensor,
        old_logp: torch.Tensor | None = None,
        ref_logp: torch.Tensor | None = None,
        max_grad_norm: float | None = 1.0,
    ) -> GRPOOutput:
        """loss -> backward -> gradient clipping over the optimizer's parameters -> optimizer step."""
        out = self.loss(logp, mask, rewards, old_logp, ref_logp)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            out.stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        optimizer.step()
        return out
