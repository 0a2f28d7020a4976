"""Retrieval evaluation under the house protocol (DESIGN.md, "Evaluation protocol").

Full ranking over the whole catalogue (never sampled by default) with each user's earlier history
masked; Recall/HR/NDCG/MRR/Precision@K averaged over the users of the split, plus coverage,
the Gini index of recommendation counts and the average popularity (ARP) of the top max(ks) lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch

from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.eval.beyond import coverage_from_counts, gini_index, popularity_bias, recommendation_counts
from recstack.eval.topk import TOPK_METRICS, _check_ks, metrics_from_ranks, rank_of_target, topk_metrics

if TYPE_CHECKING:  # eval knows nothing of the stages (DESIGN.md): duck-typed, imported for hints only
    from recstack.retrieval.base import Retriever


class TopKAccumulator:
    """Sums per-user top-K metrics over batches so a split can be evaluated in pieces.

    ks, metrics: as in `topk_metrics`. num_items: catalogue size (for coverage / Gini).
    item_popularity: [num_items + 1] counts for ARP (omitted from the result when None).
    """

    def __init__(
        self,
        ks: Iterable[int],
        num_items: int,
        metrics: Iterable[str] = TOPK_METRICS,
        item_popularity: torch.Tensor | None = None,
    ) -> None:
        self.ks, self.metrics = _check_ks(ks, metrics)
        self.num_items = num_items
        self.item_popularity = item_popularity
        self.sums: dict[str, float] = {}
        self.users = 0  # users with at least one target (the metric denominator)
        self.arp_sum, self.arp_users = 0.0, 0
        self.counts = torch.zeros(num_items + 1, dtype=torch.long)

    def add(self, pred_items: torch.Tensor, targets: Jagged) -> None:
        """pred_items: [B, K] best first (0 = empty slot); targets: Jagged with B rows."""
        pred_items = pred_items.cpu()
        per_user = cast(dict[str, torch.Tensor], topk_metrics(pred_items, targets, self.ks, self.metrics, reduce=False))
        for name, values in per_user.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(torch.nansum(values))
        self.users += int((~torch.isnan(next(iter(per_user.values())))).sum())
        top = pred_items[:, : max(self.ks)]
        self.counts += recommendation_counts(top, self.num_items)
        if self.item_popularity is not None:
            with_list = int((top > 0).any(1).sum())
            if with_list:
                self.arp_sum += popularity_bias(top, self.item_popularity)["arp"] * with_list
                self.arp_users += with_list

    def result(self) -> dict[str, float]:
        out = {name: total / self.users if self.users else float("nan") for name, total in self.sums.items()}
        k = max(self.ks)
        out[f"coverage@{k}"] = coverage_from_counts(self.counts)
        out[f"gini@{k}"] = gini_index(self.counts[1:])
        if self.item_popularity is not None:
            out[f"arp@{k}"] = self.arp_sum / self.arp_users if self.arp_users else float("nan")
        out["num_users"] = float(self.users)
        return out


def _check_split(split: str) -> None:
    if split not in SPLIT_CODES or split == "train":
        raise ConfigError(f"split must be 'valid' or 'test', got {split!r}")


@torch.inference_mode()
def evaluate_retriever(
    retriever: Retriever,
    dataset: Dataset,
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    batch_size: int = 1024,
    exclude_history: bool = True,
    metrics: Iterable[str] = TOPK_METRICS,
    progress: bool = False,
) -> dict[str, float]:
    """Full-ranking top-K evaluation of `retriever` on the users of `split`.

    Targets: each user's items in `split` (`dataset.eval_users`). History: the user's rows before
    `split` (train for "valid", train + valid for "test"), built once and cut into batches of
    `batch_size` users; with exclude_history those items are masked from the ranking.
    Returns "recall@10", "ndcg@10", ... averaged over users, "coverage@K", "gini@K", "arp@K"
    (K = max(ks), ARP from train popularity) and "num_users".
    """
    _check_split(split)
    ks = tuple(ks)
    users, targets = dataset.eval_users(split)
    if users.numel() == 0:
        raise DataError(f"dataset {dataset.name!r} has no {split!r} interactions to evaluate")
    history = dataset.user_batch(users, before=split)
    acc = TopKAccumulator(ks, dataset.num_items, metrics, dataset.item_popularity("train"))
    name = getattr(retriever, "name", type(retriever).__name__)
    starts: Iterable[int] = range(0, users.numel(), batch_size)
    if progress:
        from recstack.progress import progress_bar

        starts = progress_bar(starts, desc=f"evaluate {name} on {split}", unit="batch")
    for start in starts:
        rows = torch.arange(start, min(start + batch_size, users.numel()))
        candidates = retriever.retrieve(history.select(rows), max(ks), exclude_history=exclude_history)
        if candidates.items.dim() != 2 or candidates.items.shape[0] != rows.numel():
            raise DataError(
                f"retriever {name!r} returned items of shape {tuple(candidates.items.shape)} "
                f"for a batch of {rows.numel()} users"
            )
        acc.add(candidates.items, targets.select(rows))
    return acc.result()


def sampled_metrics(
    scores_pos: torch.Tensor,
    scores_neg: torch.Tensor,
    ks: Iterable[int] = (5, 10, 20),
    metrics: Iterable[str] = TOPK_METRICS,
    ties: str = "pessimistic",
    reduce: bool = True,
) -> dict[str, float] | dict[str, torch.Tensor]:
    """Top-K metrics under the sampled-negative protocol: the target ranked among N sampled negatives.

    scores_pos: [B] score of each user's target. scores_neg: [B, N] scores of its sampled negatives.
    NOT the house default: sampled metrics overstate and can reorder models compared with full
    ranking (Krichene & Rendle, KDD 2020). Provided to compare with papers that report them.
    """
    if scores_pos.dim() != 1 or scores_neg.dim() != 2 or scores_neg.shape[0] != scores_pos.shape[0]:
        raise DataError(
            f"expected scores_pos [B] and scores_neg [B, N], got {tuple(scores_pos.shape)} "
            f"and {tuple(scores_neg.shape)}"
        )
    scores = torch.cat([scores_pos.unsqueeze(1), scores_neg.to(scores_pos.dtype)], dim=1)
    ranks = rank_of_target(scores, torch.zeros(scores.shape[0], dtype=torch.long), ties=ties)
    return metrics_from_ranks(ranks, ks, metrics, reduce)
