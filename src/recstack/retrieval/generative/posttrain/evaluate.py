"""Before / after measures of RL post-training (OneMall, arXiv 2601.21770, §2.16 reports the ranking
model's reward of the top-10/100/500 generated items; issue 14 adds test recall@10, which must not fall).

    users = sample_users(dataset, "test", 1000, seed=0)
    before = posttrain_metrics(retriever, ranker, dataset, users, weights)   # {"reward@10", "reward@100", "recall@10"}
    ... post_train(retriever, ...) ...
    after = posttrain_metrics(retriever, ranker, dataset, users, weights)
    table = compare_metrics(before, after)

reward@k: the mean fused ranker reward r = Σ_task w_task · p(task) over the top-k items the retriever
generates for each user (history before `split` excluded; empty slots left out), pooled over users.
Users are scored in batches (one beam search and one ranker call per batch, no loop over users).
"""

from __future__ import annotations

from typing import Any

import torch

from recstack.data.dataset import Dataset
from recstack.retrieval.generative.posttrain.losses import fused_reward
from recstack.retrieval.generative.posttrain.trainer import RewardModel
from recstack.retrieval.generative.retriever import GenerativeRetriever


def sample_users(dataset: Dataset, split: str, count: int | None, seed: int = 0) -> torch.Tensor:
    """[U] sorted users of `split` (a seeded sample of `count`; None or more than there are = all)."""
    users, _ = dataset.eval_users(split)
    if count is None or users.numel() <= count:
        return users
    order = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(seed))
    return users[order[:count]].sort().values


@torch.no_grad()
def generated_reward(
    retriever: GenerativeRetriever,
    ranker: RewardModel,
    dataset: Dataset,
    users: torch.Tensor,
    weights: dict[str, float] | None = None,
    ks: tuple[int, ...] = (10, 100),
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, float]:
    """{"reward@k": mean fused reward of the top-k generated items} for users [U] (history before `split`)."""
    features = ("timestamp", *dataset.labels, *retriever.event_columns)
    full = dataset.user_batch(users, before=split, features=features)
    sums, counts = torch.zeros(len(ks), dtype=torch.float64), torch.zeros(len(ks), dtype=torch.float64)
    for start in range(0, users.numel(), batch_size):  # batches of users
        batch = full.select(torch.arange(start, min(start + batch_size, users.numel())))
        candidates = retriever.retrieve(batch, max(ks))
        rewards = fused_reward(ranker.score(batch, candidates), weights)
        keep = (candidates.items > 0) & torch.isfinite(rewards)
        for i, k in enumerate(ks):  # a handful of cut-offs
            sums[i] += float(torch.where(keep[:, :k], rewards[:, :k], 0.0).sum())
            counts[i] += float(keep[:, :k].sum())
    return {f"reward@{k}": float(sums[i] / counts[i]) if counts[i] else float("nan") for i, k in enumerate(ks)}


def posttrain_metrics(
    retriever: GenerativeRetriever,
    ranker: RewardModel,
    dataset: Dataset,
    users: torch.Tensor,
    weights: dict[str, float] | None = None,
    ks: tuple[int, ...] = (10, 100),
    recall_k: int = 10,
) -> dict[str, float]:
    """reward@k on the test users `users` and their test recall@recall_k (GenerativeRetriever.evaluate:
    full ranking by beam search, history masked)."""
    out = generated_reward(retriever, ranker, dataset, users, weights, ks, "test")
    recall = retriever.evaluate(dataset, "test", (recall_k,), users=users)
    return {**out, f"recall@{recall_k}": recall[f"recall@{recall_k}"]}


def compare_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, Any]]:
    """{metric: {"before", "after", "change"}} with change = after / before − 1 (None when before is 0)."""
    return {
        key: {
            "before": before[key],
            "after": after[key],
            "change": after[key] / before[key] - 1.0 if before[key] else None,
        }
        for key in before
        if key in after
    }
