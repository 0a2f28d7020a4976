"""Page arrangement by a fused score (the cascade's default last stage).

score(item) = sum_t weight_t * p_t(item) + sum_c channel_weight_c * evidence_c(item), then the top-k
items in that order. p_t are the ranker's task probabilities; evidence_c = 1 / (rank of the item in
retrieval channel c + 1), 0 when channel c did not retrieve it (Candidates.channel_scores). The
retrieval term lets a strong sequential channel keep its say when the ranker, trained pointwise on
labels, misses the order of consumption; `tune_page_weights` picks the channel weights on the valid
split (coordinate ascent on page NDCG@k over a grid, ranker weights fixed). Whole-page optimisation
(`pagellm`) and the baselines (`ranker_topk`, `mmr`) sit behind the same call (page/base.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from recstack.data.batch import Candidates, Page
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.page.base import PageArranger, PageInputs, page_order
from recstack.registry import register


@dataclass
class PageConfig:
    k: int = 10
    """items shown per page"""
    weights: dict[str, float] = field(default_factory=dict)
    """per-task weights of the fused score; empty = every task weighted 1"""
    channel_weights: dict[str, float] = field(default_factory=dict)
    """per-retrieval-channel weights of the rank evidence term; empty = no retrieval term"""
    tune: bool = True
    """pick channel_weights on the valid split after the ranker is fitted (overwrites channel_weights);
    off: the page follows the configured weights only"""
    tune_grid: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    tune_rounds: int = 2

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise ConfigError(f"page.k must be > 0, got {self.k}")
        if self.tune and (not self.tune_grid or self.tune_rounds < 1):
            raise ConfigError("page.tune needs a non-empty page.tune_grid and page.tune_rounds >= 1")


def fuse_scores(
    scores: dict[str, torch.Tensor],
    weights: dict[str, float],
    candidates: Candidates | None = None,
    channel_weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """[B, K] weighted sum of per-task scores (+ weighted channel evidence); unknown names are an error."""
    if not scores:
        raise ConfigError("fuse_scores: the ranker returned no task scores")
    unknown = sorted(set(weights) - set(scores))
    if unknown:
        raise ConfigError(f"page.weights names task {unknown[0]!r}; the ranker's tasks are {', '.join(sorted(scores))}")
    use = weights or {task: 1.0 for task in scores}
    fused = cast(torch.Tensor, sum(w * scores[t] for t, w in use.items()))  # `use` is not empty
    if channel_weights and any(channel_weights.values()):
        if candidates is None or candidates.channel_scores is None:
            raise ConfigError("page.channel_weights needs merged candidates with channel_scores (merge_candidates)")
        fused = fused + channel_evidence(candidates, channel_weights)
    return fused


def channel_evidence(candidates: Candidates, channel_weights: dict[str, float]) -> torch.Tensor:
    """[B, K] sum_c w_c * candidates.channel_scores[..., c]."""
    unknown = sorted(set(channel_weights) - set(candidates.channel_names))
    if unknown:
        raise ConfigError(
            f"page.channel_weights names channel {unknown[0]!r}; channels: {', '.join(candidates.channel_names)}"
        )
    weights = torch.tensor([float(channel_weights.get(n, 0.0)) for n in candidates.channel_names])
    assert candidates.channel_scores is not None, "channel_evidence needs merged candidates (channel_scores)"
    return candidates.channel_scores @ weights


def arrange_page(candidates: Candidates, fused: torch.Tensor, k: int) -> Page:
    """Top-k candidates by fused score [B, K]; empty candidate slots (item 0) never outrank real items."""
    fused = fused.masked_fill(candidates.items == 0, float("-inf"))
    k = min(k, candidates.k)
    top_scores, order = torch.topk(fused, k, dim=1)
    items = candidates.items.gather(1, order)
    return Page(
        items=items,
        scores=top_scores,
        channels=candidates.channels.gather(1, order),
        channel_names=list(candidates.channel_names),
    )


def tune_page_weights(
    candidates: Candidates,
    ranker_scores: dict[str, torch.Tensor],
    task_weights: dict[str, float],
    targets: Jagged,
    config: PageConfig,
) -> dict[str, Any]:
    """Channel weights maximising page NDCG@k on held-out targets (one row per candidate row).

    Coordinate ascent: `tune_rounds` passes over the channels, each trying every grid value for one
    channel with the others fixed; ties keep the smaller weight. Returns {"channel_weights",
    "ndcg_before" (ranker only), "ndcg_after"}.
    """
    from recstack.eval.topk import topk_metrics

    base = fuse_scores(ranker_scores, task_weights)
    metric = f"ndcg@{config.k}"

    def ndcg(weights: dict[str, float]) -> float:
        fused = base + channel_evidence(candidates, weights) if any(weights.values()) else base
        page = arrange_page(candidates, fused, config.k)
        return float(topk_metrics(page.items, targets, [config.k], ("ndcg",))[metric])

    weights = {name: 0.0 for name in candidates.channel_names}
    before = best = ndcg(weights)
    for _ in range(config.tune_rounds):
        for name in candidates.channel_names:
            for value in sorted(config.tune_grid):
                trial = {**weights, name: float(value)}
                got = ndcg(trial)
                if got > best + 1e-12:
                    best, weights = got, trial
    return {"channel_weights": {n: w for n, w in weights.items() if w}, "ndcg_before": before, "ndcg_after": best}


@register("page", "fused", config=PageConfig)
class FusedPage(PageArranger):
    """The default page: fused ranker + channel-evidence score; `fit` tunes the channel weights on valid."""

    name = "fused"

    def __init__(self, config: PageConfig | None = None) -> None:
        self.config = config or PageConfig()

    def fit(self, inputs: PageInputs) -> dict[str, Any]:
        if not self.config.tune:
            return {}
        if inputs.targets is None or not inputs.scores:
            raise DataError("page.tune needs the ranker's scores and held-out targets of the valid split")
        report = tune_page_weights(inputs.candidates, inputs.scores, self.config.weights, inputs.targets, self.config)
        self.config.channel_weights = dict(report["channel_weights"])
        return report

    def fused_scores(self, inputs: PageInputs) -> torch.Tensor:
        """[B, K] the fused score of every candidate (what MMR and PageLLM build on too)."""
        return fuse_scores(inputs.scores, self.config.weights, inputs.candidates, self.config.channel_weights)

    def arrange(self, inputs: PageInputs, k: int) -> Page:
        return page_order(inputs.candidates, self.fused_scores(inputs))


@dataclass
class RankerTopKConfig:
    k: int = 10
    weights: dict[str, float] = field(default_factory=dict)
    """per-task weights of the ranker's fused score; empty = every task weighted 1"""


@register("page", "ranker_topk", config=RankerTopKConfig)
class RankerTopK(PageArranger):
    """Baseline: the ranker's top-k by its weighted task score alone (no retrieval evidence, nothing tuned)."""

    name = "ranker_topk"

    def __init__(self, config: RankerTopKConfig | None = None) -> None:
        self.config = config or RankerTopKConfig()

    def arrange(self, inputs: PageInputs, k: int) -> Page:
        return page_order(inputs.candidates, fuse_scores(inputs.scores, self.config.weights))
