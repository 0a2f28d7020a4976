"""POPO's two reward families (Taiji, METHODS.md §2.1, step 3): semantic and ID.

    rewards = TaijiRewards(categories, RewardConfig(), search=CatalogueSearch(dataset, embedder), embedder=embedder)
    out = rewards.score(texts, contexts)     # out.rewards [N, 2] = (semantic, id); out.well_formed [N]

- semantic = category match of the predicted intent with the chosen item's category + format_weight ·
  format reward. Match [I] `partial_credit`: "prefix" = matching leading levels / target levels,
  "first_level" = 1 if the first level matches, "exact" = 1 for the whole path.
- id = agreement with collaborative signals [I] `id_mode`:
  "retrieval": embed the intent text with MiniLM, search the catalogue's item texts (the user's history
  excluded), and score the rank of the true next item among the top `id_k`: 1/log2(rank + 1) ("ndcg"),
  1/rank ("reciprocal") or 1 ("hit"), 0 outside the top k;
  "ranker": the mean probability that a frozen ranker (ranking/, `ranker_task`) gives to the top `id_k`
  items the intent retrieves for this user (pCTR of the retrieved items, as the paper's production model).
- An output that breaks the answer format (answer.py) gets 0 for both; `format_broken` in the result
  and in `stats` reports their share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from recstack.data.batch import Candidates
from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.answer import Answer, parse_output
from recstack.llm.taiji.categories import CategoryPaths, matched_levels
from recstack.llm.taiji.embedding import CatalogueSearch, TextEmbedder
from recstack.llm.taiji.prompting import UserContext

REWARD_NAMES = ("semantic", "id")


@dataclass
class RewardConfig:
    partial_credit: Literal["prefix", "first_level", "exact"] = "prefix"  # [I]
    format_weight: float = 0.2  # [I] semantic = match + format_weight · format
    id_mode: Literal["retrieval", "ranker"] = "retrieval"  # [I]
    id_k: int = 50
    id_shape: Literal["ndcg", "reciprocal", "hit"] = "ndcg"  # [I]
    intent_text: Literal["answer", "category", "description"] = "answer"  # [I] what the ID reward embeds
    exclude_history: bool = True  # leave the user's history out of the intent's retrieved items
    ranker: str | None = None  # id_mode ranker: folder of a saved ranker (`recstack run` writes runs/<name>/ranker)
    ranker_task: str | None = None  # None = the ranker's primary task

    def __post_init__(self) -> None:
        if self.id_k <= 0:
            raise ConfigError(f"rewards.id_k must be > 0, got {self.id_k}")
        if self.format_weight < 0:
            raise ConfigError(f"rewards.format_weight must be >= 0, got {self.format_weight}")


@dataclass
class RewardResult:
    rewards: torch.Tensor  # [N, 2] (semantic, id)
    well_formed: torch.Tensor  # [N] bool
    match: torch.Tensor  # [N] category match in [0, 1]
    stats: dict[str, float] = field(default_factory=dict)


def category_match(predicted: Sequence[str], target: Sequence[str], mode: str) -> float:
    """Match of a predicted path with the target path in [0, 1] (see RewardConfig.partial_credit)."""
    if not target:
        return 0.0
    levels = matched_levels(tuple(predicted), tuple(target))
    if mode == "prefix":
        return levels / len(target)
    if mode == "first_level":
        return float(levels >= 1)
    return float(levels == len(target) == len(predicted))


def rank_reward(rank: torch.Tensor, shape: str) -> torch.Tensor:
    """rank [N] (1-based; 0 = not retrieved) -> reward [N]."""
    r = rank.double()
    found = rank > 0
    if shape == "ndcg":
        value = 1.0 / torch.log2(r + 1.0)
    elif shape == "reciprocal":
        value = 1.0 / r.clamp_min(1.0)
    else:
        value = torch.ones_like(r)
    return torch.where(found, value, torch.zeros_like(value)).float()


class TaijiRewards:
    names = REWARD_NAMES

    def __init__(
        self,
        categories: CategoryPaths,
        config: RewardConfig | None = None,
        search: CatalogueSearch | None = None,
        embedder: TextEmbedder | None = None,
        ranker: Any = None,
        dataset: Dataset | None = None,
    ) -> None:
        self.categories, self.config = categories, config or RewardConfig()
        self.search, self.embedder, self.ranker, self.dataset = search, embedder, ranker, dataset
        if search is None or embedder is None:
            raise ConfigError("the ID reward needs the catalogue search and the text embedder")
        if self.config.id_mode == "ranker" and (ranker is None or dataset is None):
            raise ConfigError("rewards.id_mode ranker needs a saved ranker (rewards.ranker) and the dataset")

    def _intent_text(self, answer: Answer) -> str:
        mode = self.config.intent_text
        if mode == "category":
            return " > ".join(answer.category)
        if mode == "description":
            return answer.description
        return answer.intent_text

    def score(self, texts: Sequence[str], contexts: Sequence[UserContext]) -> RewardResult:
        """texts[i] is an output for contexts[i] (repeat a context for each rollout of its group)."""
        if len(texts) != len(contexts):
            raise DataError(f"{len(texts)} outputs but {len(contexts)} contexts")
        n, c = len(texts), self.config
        parsed = [parse_output(t) for t in texts]
        ok = torch.tensor([p.well_formed for p in parsed], dtype=torch.bool)
        match = torch.zeros(n)
        for i, (p, ctx) in enumerate(zip(parsed, contexts)):  # string matching per output
            if p.well_formed and p.answer is not None:
                predicted = self.categories.normalise(p.answer.category)
                match[i] = category_match(predicted, self.categories[ctx.target], c.partial_credit)
        semantic = torch.where(ok, match + c.format_weight, torch.zeros(n))
        id_reward = torch.zeros(n)
        rows = ok.nonzero().reshape(-1)
        if rows.numel():
            id_reward[rows] = self._id_reward([parsed[int(i)].answer for i in rows], [contexts[int(i)] for i in rows])
        stats = {
            "format_broken": float(1.0 - ok.float().mean()) if n else 0.0,
            "category_match": float(match.mean()) if n else 0.0,
            "semantic": float(semantic.mean()) if n else 0.0,
            "id": float(id_reward.mean()) if n else 0.0,
        }
        return RewardResult(torch.stack([semantic, id_reward], 1), ok, match, stats)

    def _id_reward(self, answers: Sequence[Answer | None], contexts: Sequence[UserContext]) -> torch.Tensor:
        assert self.search is not None and self.embedder is not None
        c = self.config
        queries = self.embedder.encode([self._intent_text(a) for a in answers if a is not None])
        exclude = Jagged.from_lists([ctx.history for ctx in contexts]) if c.exclude_history else None
        items, scores = self.search.search(queries, c.id_k, exclude)
        if c.id_mode == "retrieval":
            targets = torch.tensor([ctx.target for ctx in contexts]).unsqueeze(1)
            hit = (items == targets) & (targets > 0)
            rank = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.zeros(len(contexts), dtype=torch.long))
            return rank_reward(rank, c.id_shape)
        return self._ranker_reward(items, scores, contexts)

    def _ranker_reward(
        self, items: torch.Tensor, scores: torch.Tensor, contexts: Sequence[UserContext]
    ) -> torch.Tensor:
        assert self.dataset is not None and self.ranker is not None
        users = torch.tensor([ctx.user for ctx in contexts])
        from recstack.cascade import history_features

        batch = self.dataset.user_batch(users, before=contexts[0].before, features=history_features(self.dataset))
        probs = self.ranker.score(batch, Candidates.from_topk(items, scores, "intent"))
        task = self.config.ranker_task or self.ranker.primary_task
        if task not in probs:
            raise ConfigError(f"rewards.ranker_task: {task!r} is not a task of the ranker ({', '.join(probs)})")
        p = probs[task]
        valid = (items > 0).float()
        return (p * valid).sum(1) / valid.sum(1).clamp_min(1.0)
