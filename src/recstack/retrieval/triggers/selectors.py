"""Trigger selectors: which of a user's candidate triggers each I2I channel expands.

    selector.fit(context)                          # learned selectors train on replay episodes
    selector.select(episodes, quotas, routable)    # -> assignment [B, M, C] bool

The baselines CAPTS compares against (METHODS.md §2.5) give every channel the same top-`quota`
triggers by a per-trigger score:
    recent    the latest items (the default "last N")
    tagtop    items of the user's most-engaged categories (category counts over the candidates), then recency
    feedback  the user's own feedback on the trigger (the biased attribution), then recency
    random    a seeded random choice
    lic       a learned scorer of the trigger's own feedback (LIC-style: CATR's encoder, one head,
              labels = own feedback above the median) — learned, but still the biased attribution
CAPTS itself (look-ahead labels, channel heads, routing) is in capts.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import scipy.sparse as sp
import torch

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.retrieval.triggers.catr import CATR, CATRConfig, fit_catr
from recstack.retrieval.triggers.episodes import TriggerEpisodes


@dataclass
class SelectorContext:
    """What a selector may learn from, built once by the U2I2I retriever's fit.

    episodes: training episodes; expansions: channel -> binary top-N table; item_features: [I + 1, F];
    item_categories: [I + 1] long category id (0 = none)."""

    episodes: TriggerEpisodes
    expansions: dict[str, sp.csr_matrix]
    item_features: torch.Tensor
    item_categories: torch.Tensor
    progress: bool = False
    report: dict = field(default_factory=dict)


def top_triggers_per_channel(scores: torch.Tensor, quotas: torch.Tensor, routable: torch.Tensor) -> torch.Tensor:
    """Each channel c independently takes its `quotas[c]` best routable triggers by scores [B, M, C].

    Ties go to the more recent candidate (lower column), so equal scores fall back to "recent"."""
    width = scores.shape[1]
    keyed = scores.float().masked_fill(~routable, float("-inf"))
    order = torch.argsort(keyed, dim=1, descending=True, stable=True)  # stable: recency breaks ties
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(width).view(1, -1, 1).expand_as(order))
    return (rank < quotas.view(1, 1, -1)) & routable


class TriggerSelector:
    name = "selector"
    learned = False
    config: Any = None

    def fit(self, context: SelectorContext) -> None:
        """Learned selectors train here; rule-based ones keep what they need (e.g. categories)."""

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        """[B, M] how much each candidate is worth (higher = chosen first), any finite value."""
        raise NotImplementedError

    def select(self, episodes: TriggerEpisodes, quotas: torch.Tensor, routable: torch.Tensor) -> torch.Tensor:
        """Every channel gets the same best `quotas[c]` routable triggers. routable: [B, M, C] bool."""
        scores = self.trigger_scores(episodes).float()  # [B, M]
        return top_triggers_per_channel(scores.unsqueeze(-1).expand_as(routable), quotas, routable)

    def select_weighted(
        self, episodes: TriggerEpisodes, quotas: torch.Tensor, routable: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`select` plus each (trigger, channel)'s expansion weight [B, M, C] > 0 (rule-based selectors: 1)."""
        return self.select(episodes, quotas, routable), torch.ones(routable.shape)

    # persistence of learned selectors: tensors + JSON metadata
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what `state` returned."""


@register("trigger_selector", "recent")
class RecentSelector(TriggerSelector):
    name = "recent"

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        return torch.zeros(episodes.candidates.shape)  # the recency tie-break decides


@register("trigger_selector", "feedback")
class FeedbackSelector(TriggerSelector):
    name = "feedback"

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        return episodes.feedback


@dataclass
class RandomSelectorConfig:
    seed: int = 0


@register("trigger_selector", "random", config=RandomSelectorConfig)
class RandomSelector(TriggerSelector):
    name = "random"

    def __init__(self, config: RandomSelectorConfig | None = None) -> None:
        self.config = config or RandomSelectorConfig()

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.seed)
        return torch.rand(episodes.candidates.shape, generator=generator)


@register("trigger_selector", "tagtop")
class TagTopSelector(TriggerSelector):
    name = "tagtop"

    def __init__(self) -> None:
        self.item_categories: torch.Tensor | None = None

    def fit(self, context: SelectorContext) -> None:
        self.item_categories = context.item_categories

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        if self.item_categories is None:
            raise ConfigError("tagtop: fit the selector first (it needs the item categories)")
        categories = self.item_categories[episodes.candidates].masked_fill(~episodes.valid, 0)  # [B, M]
        # count of each candidate's category among the user's candidates (category 0 = unknown counts 0)
        same = (categories.unsqueeze(2) == categories.unsqueeze(1)) & (categories.unsqueeze(2) > 0)
        return same.sum(2).float()

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return ({"item_categories": self.item_categories} if self.item_categories is not None else {}), {}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.item_categories = tensors.get("item_categories")


@register("trigger_selector", "lic", config=CATRConfig)
class LICSelector(TriggerSelector):
    """A learned scorer of the trigger's own feedback: CATR's encoder, one head, no feedback input."""

    name = "lic"
    learned = True

    def __init__(self, config: CATRConfig | None = None) -> None:
        self.config = config or CATRConfig()
        self.model: CATR | None = None

    def fit(self, context: SelectorContext) -> None:
        episodes = context.episodes
        valid = episodes.valid
        median = episodes.feedback[valid].median() if bool(valid.any()) else torch.tensor(0.0)
        label = (episodes.feedback > median).float().unsqueeze(-1)
        torch.manual_seed(self.config.seed)
        self.model = CATR(self.config, context.item_features, 1, episodes.candidates.shape[1])
        no_feedback = torch.zeros_like(episodes.feedback)  # the label must not be an input
        losses = fit_catr(self.model, episodes.candidates, no_feedback, label, label, label, progress=context.progress)
        context.report["lic_losses"] = [round(x, 5) for x in losses]

    def trigger_scores(self, episodes: TriggerEpisodes) -> torch.Tensor:
        if self.model is None:
            raise ConfigError("lic: fit the selector first")
        with torch.no_grad():
            logits, _ = self.model(episodes.candidates, torch.zeros_like(episodes.feedback))
        return logits[..., 0]

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        if self.model is None:
            raise ConfigError("lic: nothing to save; fit the selector first")
        return dict(self.model.state_dict()), {"max_candidates": self.model.age_embedding.num_embeddings}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.model = CATR(self.config, tensors["item_features"], 1, int(meta["max_candidates"]))
        self.model.load_state_dict(tensors)
        self.model.eval()
