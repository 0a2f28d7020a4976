"""Multi-reward weighting strategies for GRPO (registry kind "weighting"; Taiji/POPO, METHODS.md §2.1).

    strategy = build("weighting", {"name": "mgda"})
    w = strategy.weights(rewards, gradients, losses)   # rewards [B, G, K]; gradients [K, P]; losses [K]
                                                       # -> w [K] (or [B, K] for cv with per_group)

- "fixed": constant weights (trl's `reward_weights`; equal when not given).
- "mgda":  POPO. The min-norm convex combination of the K per-reward policy gradients over the
           trainable parameters (rl/min_norm.py): with two rewards λ* = clip(g2·(g2−g1)/||g2−g1||², 0, 1).
           The update then decreases every reward's loss when that is possible and is zero at a
           Pareto-stationary point (the paper's "gradient-alignment indicator" read as MGDA [I]).
- "cv":    POPO-light. w_k ∝ CV_k = std_k / |mean_k| of reward k over the rollout group [I], normalised
           to sum 1, optionally EMA-smoothed [I]: no gradient computation, ≈ zero overhead.

Interpretation flags ([I], METHODS.md §2.1): mgda.normalize (gradient normalisation before the
min-norm step: none as in the third-party repro, or Sener & Koltun's l2 / loss), mgda.skip_flat (a
reward with a zero gradient in this batch is left out instead of freezing the update), cv.per_group (one
weight vector per group instead of the batch mean), cv.ema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from recstack.errors import ConfigError, DataError
from recstack.registry import register
from recstack.rl.advantages import check_rewards
from recstack.rl.min_norm import min_norm_weights


class WeightingStrategy:
    """Base class. `needs_gradients`: the trainer must pass per-reward gradients [K, P]."""

    name: str = "weighting"
    needs_gradients: bool = False

    def weights(
        self, rewards: torch.Tensor, gradients: torch.Tensor | None = None, losses: torch.Tensor | None = None
    ) -> torch.Tensor:
        """rewards [B, G, K]; gradients [K, P] of each reward's policy loss; losses [K] -> weights [K] or [B, K]."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """JSON-able state carried across steps (saved with a POPO checkpoint)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class FixedWeightsConfig:
    weights: list[float] | None = None
    """one weight per reward, in reward order; None = equal weights"""

    def __post_init__(self) -> None:
        if self.weights is not None and (not self.weights or any(w < 0 for w in self.weights)):
            raise ConfigError(f"weighting.weights must be a non-empty list of numbers >= 0, got {self.weights!r}")


@register("weighting", "fixed", config=FixedWeightsConfig)
class FixedWeights(WeightingStrategy):
    name = "fixed"

    def __init__(self, config: FixedWeightsConfig | None = None) -> None:
        self.config = config or FixedWeightsConfig()

    def weights(
        self, rewards: torch.Tensor, gradients: torch.Tensor | None = None, losses: torch.Tensor | None = None
    ) -> torch.Tensor:
        k = check_rewards(rewards).shape[-1]
        if self.config.weights is None:
            return torch.full((k,), 1.0 / k)
        if len(self.config.weights) != k:
            raise ConfigError(f"weighting.weights has {len(self.config.weights)} entries but there are {k} rewards")
        return torch.tensor(self.config.weights, dtype=torch.float32)


@dataclass
class MGDAConfig:
    normalize: Literal["none", "l2", "loss"] = "none"
    """[I] scale each gradient before the min-norm step: none (POPO repro), l2 (unit norm), loss (divide by |loss|)"""
    max_iter: int = 500  # Frank-Wolfe iterations (K > 2 only)
    skip_flat: bool = True
    """[I] a reward whose gradient is zero (no spread in any group: e.g. an ID reward that hit nothing) gets
    weight 0 and the min-norm step runs over the others; plain MGDA would stop at the zero gradient"""

    def __post_init__(self) -> None:
        if self.max_iter <= 0:
            raise ConfigError(f"weighting.max_iter must be > 0, got {self.max_iter!r}")


@register("weighting", "mgda", config=MGDAConfig)
class MGDAWeights(WeightingStrategy):
    """POPO: min-norm weights of the per-reward policy gradients."""

    name = "mgda"
    needs_gradients = True

    def __init__(self, config: MGDAConfig | None = None) -> None:
        self.config = config or MGDAConfig()

    def weights(
        self, rewards: torch.Tensor, gradients: torch.Tensor | None = None, losses: torch.Tensor | None = None
    ) -> torch.Tensor:
        k = check_rewards(rewards).shape[-1]
        if gradients is None or gradients.dim() != 2 or gradients.shape[0] != k:
            got = None if gradients is None else tuple(gradients.shape)
            raise DataError(f"mgda needs per-reward gradients [K={k}, P], got {got}")
        g = gradients.double()
        if self.config.normalize == "l2":
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        elif self.config.normalize == "loss":
            if losses is None:
                raise DataError("mgda with normalize: loss needs the per-reward losses")
            g = g / losses.detach().double().abs().clamp_min(1e-12).unsqueeze(1)
        if not self.config.skip_flat:
            return min_norm_weights(g, self.config.max_iter)
        active = g.norm(dim=1) > 0
        if not bool(active.any()):
            return torch.full((k,), 1.0 / k)  # no reward has a signal: nothing to weigh
        w = torch.zeros(k)
        w[active] = min_norm_weights(g[active], self.config.max_iter)
        return w


@dataclass
class CVConfig:
    ema: float = 0.0
    """[I] w ← ema·w_prev + (1 − ema)·w_step; 0 = no smoothing"""
    per_group: bool = False
    """[I] one weight vector per rollout group ([B, K]) instead of the mean CV over the batch's groups"""
    eps: float = 1e-6  # added to |mean| so a zero-mean reward does not divide by zero

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"weighting.ema must be in [0, 1), got {self.ema!r}")
        if self.per_group and self.ema > 0:
            raise ConfigError("weighting.ema smooths one weight vector per step; it cannot be used with per_group")
        if self.eps <= 0:
            raise ConfigError(f"weighting.eps must be > 0, got {self.eps!r}")


@register("weighting", "cv", config=CVConfig)
class CVWeights(WeightingStrategy):
    """POPO-light: w_k ∝ std_k / |mean_k| of reward k within the rollout group."""

    name = "cv"

    def __init__(self, config: CVConfig | None = None) -> None:
        self.config = config or CVConfig()
        self.previous: torch.Tensor | None = None

    def weights(
        self, rewards: torch.Tensor, gradients: torch.Tensor | None = None, losses: torch.Tensor | None = None
    ) -> torch.Tensor:
        r = check_rewards(rewards).double()
        cv = r.std(dim=1) / (r.mean(dim=1).abs() + self.config.eps)  # [B, K]
        if not self.config.per_group:
            cv = cv.mean(0, keepdim=True)
        total = cv.sum(-1, keepdim=True)
        uniform = torch.full_like(cv, 1.0 / cv.shape[-1])
        w = torch.where(total > 0, cv / total.clamp_min(1e-300), uniform)  # no spread anywhere: equal weights
        if self.config.per_group:
            return w.float()
        w = w[0]
        if self.config.ema > 0 and self.previous is not None and self.previous.shape == w.shape:
            w = self.config.ema * self.previous + (1 - self.config.ema) * w
        self.previous = w.clone()
        return w.float()

    def state(self) -> dict[str, Any]:
        return {"previous": None if self.previous is None else self.previous.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        previous = state.get("previous")
        self.previous = None if previous is None else torch.tensor(previous, dtype=torch.float64)
