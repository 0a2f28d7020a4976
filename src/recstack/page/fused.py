"""Page arrangement by a fused multi-task score (the cascade's default last stage).

score(item) = sum_t weight_t * p_t(item), then the top-k items in that order. Whole-page
optimisation (PageLLM and friends) will replace this with a learned arrangement behind the same call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recstack.data.batch import Candidates, Page
from recstack.errors import ConfigError


@dataclass
class PageConfig:
    k: int = 10
    """items shown per page"""
    weights: dict[str, float] = field(default_factory=dict)
    """per-task weights of the fused score; empty = every task weighted 1"""

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise ConfigError(f"page.k must be > 0, got {self.k}")


def fuse_scores(scores: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """[B, K] weighted sum of per-task scores; unknown task names in `weights` are an error."""
    if not scores:
        raise ConfigError("fuse_scores: the ranker returned no task scores")
    unknown = sorted(set(weights) - set(scores))
    if unknown:
        raise ConfigError(f"page.weights names task {unknown[0]!r}; the ranker's tasks are {', '.join(sorted(scores))}")
    use = weights or {task: 1.0 for task in scores}
    return sum(w * scores[t] for t, w in use.items())


def arrange_page(candidates: Candidates, fused: torch.Tensor, k: int) -> Page:
    """Top-k candidates by fused score [B, K]; empty candidate slots (item 0) never outrank real items."""
    fused = fused.masked_fill(candidates.items == 0, float("-inf"))
    k = min(k, candidates.k)
    top_scores, order = torch.topk(fused, k, dim=1)
    items = candidates.items.gather(1, order)
    return Page(items=items, scores=top_scores, channels=candidates.channels.gather(1, order),
                channel_names=list(candidates.channel_names))
