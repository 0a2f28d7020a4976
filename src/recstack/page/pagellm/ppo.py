"""PPO over page generation (the RLHF step of PageLLM, METHODS.md §2.2).

Episode = one page: slot t's action is its item. Per-slot reward r_t = MixedReward(slot t) - kl_coef *
(log pi(a_t) - log pi_ref(a_t)) (pi_ref = the SFT policy, frozen); GAE over the k slots with the value
head; clipped surrogate + value loss - entropy bonus. Written here rather than taken from trl: trl's
PPOTrainer drives a Hugging Face causal LM over text tokens, and this policy points at pool items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from recstack.page.pagellm.backbones import AnyPagePolicy
from recstack.page.pagellm.config import PPOConfig
from recstack.page.pagellm.context import PageContext
from recstack.page.pagellm.rewards import MixedReward


def gae(rewards: torch.Tensor, values: torch.Tensor, live: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Advantages [B, k] of per-slot rewards / values [B, k] (episode ends after slot k; dead slots 0)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    next_value = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running * live[:, t]
        next_value = values[:, t]
    return advantages


def ppo_train(
    policy: AnyPagePolicy,
    reference: AnyPagePolicy | None,
    context: PageContext,
    reward: MixedReward,
    config: PPOConfig,
    generator: torch.Generator,
    on_step: Callable[[dict[str, Any]], object] | None = None,
) -> list[dict[str, Any]]:
    """Run config.steps PPO iterations on requests drawn from `context`; returns one record per step
    (mean total reward of the sampled pages, KL to the reference, losses, seconds)."""
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    history = []
    for step in range(config.steps):
        started = time.perf_counter()
        rows = torch.randint(len(context), (config.batch_size,), generator=generator)
        batch = context.select(rows)
        policy.eval()
        with torch.no_grad():
            page = policy.generate(batch, greedy=False, generator=generator)
            old_log_probs, _, values = policy.evaluate(batch, page)
            ref_log_probs = reference.evaluate(batch, page)[0] if reference is not None else old_log_probs
            live = (page >= 0).float()
            task_rewards = reward(batch, page)
            kl = (old_log_probs - ref_log_probs) * live
            rewards = task_rewards - config.kl_coef * kl
            advantages = gae(rewards, values, live, config.gamma, config.gae_lambda)
            returns = advantages + values
            norm = advantages[live > 0]
            advantages = (advantages - norm.mean()) / norm.std().clamp(min=1e-8) * live
        policy.train()
        for _ in range(config.epochs):
            log_probs, entropy, new_values = policy.evaluate(batch, page)
            ratio = (log_probs - old_log_probs).exp()
            surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - config.clip, 1 + config.clip) * advantages)
            count = live.sum().clamp(min=1)
            policy_loss = -(surrogate * live).sum() / count
            value_loss = ((new_values - returns) ** 2 * live).sum() / count
            entropy_mean = (entropy * live).sum() / count
            loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy_mean
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
        record = {
            "step": step + 1,
            "reward": float(task_rewards.sum(1).mean()),
            "kl": float(kl.sum(1).mean()),
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy_mean.item(),
            "seconds": round(time.perf_counter() - started, 4),
        }
        history.append(record)
        if on_step is not None:
            on_step(record)
    policy.eval()
    return history
