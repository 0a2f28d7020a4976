"""MMR diversity re-ranking (Carbonell & Goldstein 1998), a whole-page baseline for PageLLM.

Relevance is the fused page score (ranker + tuned channel evidence, exactly the `fused` page),
min-max scaled within each request's pool; redundancy is the highest cosine similarity to an item
already placed (item vectors from page/item_space.py). Greedy, all requests at once:
    next = argmax_i  lambda * rel(i) - (1 - lambda) * max_{j on page} cos(i, j)
over the top `pool` candidates; the rest follow in fused order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recstack.data.batch import Page
from recstack.errors import ConfigError, DataError
from recstack.page.base import PageInputs, minmax_rows, page_order
from recstack.page.fused import FusedPage, PageConfig
from recstack.page.item_space import ItemSpace, ItemSpaceConfig, item_space
from recstack.registry import register
from recstack.train.checkpoint import load_tensors, save_tensors


@dataclass
class MMRConfig(PageConfig):
    mmr_lambda: float = 0.8
    """weight of relevance against redundancy (1 = the fused page)"""
    pool: int = 50
    """top fused candidates the greedy pass chooses from"""
    item_space: ItemSpaceConfig = field(default_factory=ItemSpaceConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"page.mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.pool < self.k:
            raise ConfigError(f"page.pool ({self.pool}) must be >= page.k ({self.k})")


@register("page", "mmr", config=MMRConfig)
class MMRPage(FusedPage):
    name = "mmr"
    learned = True
    config: MMRConfig

    def __init__(self, config: MMRConfig | None = None) -> None:
        super().__init__(config or MMRConfig())
        self.space: ItemSpace | None = None

    def fit(self, inputs: PageInputs) -> dict[str, Any]:
        if inputs.dataset is None:
            raise DataError("page mmr: fitting needs the training dataset (item vectors)")
        report = super().fit(inputs)
        self.space = item_space(inputs.dataset, self.config.item_space)
        return report

    def arrange(self, inputs: PageInputs, k: int) -> Page:
        if self.space is None:
            raise DataError("page mmr: arrange before fit (no item vectors)")
        cands = inputs.candidates
        fused = self.fused_scores(inputs).masked_fill(cands.items == 0, float("-inf"))
        pool = min(self.config.pool, cands.k)
        top_scores, top_cols = torch.topk(fused, pool, dim=1)  # [B, P]
        real = torch.isfinite(top_scores)
        relevance = minmax_rows(top_scores, real)
        vectors = self.space.vectors[cands.items.gather(1, top_cols).long()]  # [B, P, D]
        similarity = vectors @ vectors.transpose(1, 2)  # [B, P, P]
        lam = self.config.mmr_lambda
        taken = ~real
        closest = torch.full_like(relevance, float("-inf"))  # max similarity to the page so far
        chosen = []
        for _ in range(min(k, pool)):  # k greedy steps, each over every request at once
            penalty = torch.where(torch.isinf(closest), 0.0, closest)
            gain = (lam * relevance - (1 - lam) * penalty).masked_fill(taken, float("-inf"))
            pick = gain.argmax(1)  # [B]
            valid = torch.isfinite(gain.gather(1, pick.unsqueeze(1))).squeeze(1)
            chosen.append(torch.where(valid, top_cols.gather(1, pick.unsqueeze(1)).squeeze(1), -1))
            taken = taken | torch.nn.functional.one_hot(pick, pool).bool()
            closest = torch.maximum(closest, similarity.gather(1, pick.view(-1, 1, 1).expand(-1, 1, pool)).squeeze(1))
        return page_order(cands, fused, torch.stack(chosen, 1))

    def save_state(self, path: Path) -> dict[str, Any]:
        if self.space is None:
            raise DataError("page mmr: nothing to save before fit")
        save_tensors({"vectors": self.space.vectors, "codes": self.space.codes}, path / "item_space.safetensors")
        return {"vocab": self.space.vocab}

    def load_state(self, path: Path, meta: dict[str, Any]) -> None:
        tensors = load_tensors(path / "item_space.safetensors")
        self.space = ItemSpace(tensors["vectors"], tensors["codes"], list(meta["vocab"]))
