"""PageLLM's two reward models and their mix (METHODS.md §2.2).

- PageRewardModel R_page(P): coarse, whole-page quality. A transformer encoder over the user token,
  the history and the page's items (item token + candidate features + slot embedding), pooled to a
  scalar; trained Bradley-Terry on all four preference families: L = -log sigmoid(R(P+) - R(P-)).
- ItemRewardModel r(i_k, k): fine, per item and position. An MLP over (item token + features, the
  user's pooled history, slot k); a page scores sum_k w_k r(i_k, k) with w_k = 1 / log2(k + 1) ([I]
  DCG-style), trained Bradley-Terry on the position-sensitive families (relevance, ranking = the
  engagement-relevant position swaps).
- MixedReward: per-slot rewards for PPO, item rewards at each item's slot and the page reward at the
  last slot: R = alpha * R_page + (1 - alpha) * sum_k w_k r(i_k, k); either part can be switched off.

Shapes: B pages, k slots; pages are pool columns [B, k] (-1 = empty slot).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from recstack.nn.mlp import MLP
from recstack.nn.transformer import EncoderLayer
from recstack.page.pagellm.config import PageModelConfig
from recstack.page.pagellm.context import PageContext
from recstack.page.pagellm.model import PageTokens

PageScore = Callable[[PageContext, torch.Tensor], torch.Tensor]


def position_weights(k: int, kind: str) -> torch.Tensor:
    """[k] w_k: "dcg" 1 / log2(k + 1) for slots k = 1..k, "uniform" ones."""
    if kind == "uniform":
        return torch.ones(k)
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))


def page_tokens(tokens: PageTokens, context: PageContext, page: torch.Tensor) -> torch.Tensor:
    """[B, k, D] the candidate tokens of the page's pool columns (zeros at empty slots)."""
    cands = tokens.candidates(context)
    picked = cands.gather(1, page.clamp(min=0).unsqueeze(2).expand(-1, -1, cands.shape[2]))
    return picked * (page >= 0).unsqueeze(2)


class PageRewardModel(nn.Module):
    def __init__(self, codes: torch.Tensor, vocab: list[int], feature_dim: int, slots: int, config: PageModelConfig):
        super().__init__()
        d = config.dim
        self.tokens = PageTokens(codes, vocab, feature_dim, d)
        self.slot_embedding = nn.Embedding(slots, d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.heads, None, 4 * d, config.dropout, "gelu") for _ in range(config.layers)
        )
        self.head = MLP(d, [d], 1, activation="gelu")

    def forward(self, context: PageContext, page: torch.Tensor) -> torch.Tensor:
        """-> [B] R_page"""
        head, head_mask = self.tokens.context(context)
        items = page_tokens(self.tokens, context, page) + self.slot_embedding.weight[: page.shape[1]]
        x = torch.cat([head, items], dim=1)
        mask = torch.cat([head_mask, page >= 0], dim=1)
        for layer in self.layers:
            x = layer(x, mask.unsqueeze(1))
        on_page = (page >= 0).float().unsqueeze(2)
        pooled = x[:, 0] + (x[:, head.shape[1] :] * on_page).sum(1) / on_page.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(1)


class ItemRewardModel(nn.Module):
    def __init__(self, codes: torch.Tensor, vocab: list[int], feature_dim: int, slots: int, config: PageModelConfig):
        super().__init__()
        d = config.dim
        self.tokens = PageTokens(codes, vocab, feature_dim, d)
        self.slot_embedding = nn.Embedding(slots, d)
        self.head = MLP(3 * d, [2 * d, d], 1, activation="gelu", dropout=config.dropout)

    def item_rewards(self, context: PageContext, page: torch.Tensor) -> torch.Tensor:
        """-> [B, k] r(i_k, k) (0 at empty slots)"""
        items = page_tokens(self.tokens, context, page)
        history = self.tokens.item(context.history)
        known = (context.history > 0).float().unsqueeze(2)
        user = ((history * known).sum(1) / known.sum(1).clamp(min=1)).unsqueeze(1).expand_as(items)
        slots = self.slot_embedding.weight[: page.shape[1]].expand_as(items)
        return self.head(torch.cat([items, user, slots], dim=2)).squeeze(2) * (page >= 0)

    def forward(self, context: PageContext, page: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """-> [B] sum_k w_k r(i_k, k)"""
        return (self.item_rewards(context, page) * weights[: page.shape[1]]).sum(1)


def train_bradley_terry(
    score: PageScore,
    parameters: list[nn.Parameter],
    context: PageContext,
    rows: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """Minimise -log sigmoid(score(P+) - score(P-)) over pairs (context row [P], pages [P, k]); mean loss per epoch."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(rows.numel(), generator=generator)
        total = 0.0
        for start in range(0, rows.numel(), batch_size):
            pick = order[start : start + batch_size]
            scores = score(context.select(rows[pick]).repeat(2), torch.cat([better[pick], worse[pick]]))
            margin = scores[: pick.numel()] - scores[pick.numel() :]
            loss = nn.functional.softplus(-margin).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * pick.numel()
        losses.append(total / max(rows.numel(), 1))
    return losses


@torch.no_grad()
def pair_accuracy(
    score: PageScore, context: PageContext, rows: torch.Tensor, better: torch.Tensor, worse: torch.Tensor
) -> float:
    """Share of pairs the model orders right (ties count half)."""
    if rows.numel() == 0:
        return math.nan
    ctx = context.select(rows)
    diff = score(ctx, better) - score(ctx, worse)
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


class MixedReward:
    """Per-slot PPO rewards [B, k] from a page reward (at the last slot) and item rewards (at each slot).

    page_fn(context, page) -> [B]; item_fn(context, page) -> [B, k] r(i_k, k). `scale` = (mean, std) per
    reward, subtracted / divided before mixing ([I] normalise_rewards), so alpha mixes comparable units.
    """

    def __init__(
        self,
        page_fn: PageScore | None,
        item_fn: PageScore | None,
        alpha: float,
        weights: torch.Tensor,
        page_scale: tuple[float, float] = (0.0, 1.0),
        item_scale: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if page_fn is None and item_fn is None:
            raise ValueError("MixedReward needs a page reward, an item reward or both")
        self.page_fn, self.item_fn, self.alpha, self.weights = page_fn, item_fn, alpha, weights
        self.page_scale, self.item_scale = page_scale, item_scale

    @torch.no_grad()
    def __call__(self, context: PageContext, page: torch.Tensor) -> torch.Tensor:
        b, k = page.shape
        rewards = torch.zeros(b, k)
        page_weight = self.alpha if self.item_fn is not None else 1.0
        item_weight = 1.0 - self.alpha if self.page_fn is not None else 1.0
        if self.item_fn is not None:
            mean, std = self.item_scale
            rewards += item_weight * self.weights[:k] * (self.item_fn(context, page) - mean) / std * (page >= 0)
        if self.page_fn is not None:
            mean, std = self.page_scale
            rewards[:, -1] += page_weight * (self.page_fn(context, page) - mean) / std
        return rewards
