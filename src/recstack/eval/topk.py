"""Top-K ranking metrics: Recall, HR, Precision, NDCG, MRR (binary relevance), batched in torch.

Two entry points:
- `topk_metrics(pred_items, targets)`: a top-K list per user against a set of target items
  (any number per user; thousands are fine: membership is a sort + binary search, never a
  [B, K, T] comparison).
- `rank_of_target(scores, target)` + `metrics_from_ranks(ranks)`: the fast path when each user has
  exactly one target (leave-one-out) and the full score matrix is at hand.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError

TOPK_METRICS = ("recall", "hr", "ndcg", "mrr", "precision")
TIES = ("pessimistic", "average", "optimistic")


def _check_ks(ks: Iterable[int], metrics: Iterable[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    ks, metrics = tuple(int(k) for k in ks), tuple(metrics)
    if not ks or min(ks) < 1:
        raise ConfigError(f"ks must be positive integers, got {ks}")
    if not metrics:
        raise ConfigError(f"metrics is empty; valid: {', '.join(TOPK_METRICS)}")
    unknown = [m for m in metrics if m not in TOPK_METRICS]
    if unknown:
        raise ConfigError(f"unknown top-K metric {unknown[0]!r}; valid: {', '.join(TOPK_METRICS)}")
    return ks, metrics


def _reduce(values: dict[str, torch.Tensor], valid: torch.Tensor, reduce: bool):
    """Mean over valid users (NaN when none), or per-user tensors with NaN at invalid users."""
    if reduce:
        count = int(valid.sum())
        return {k: float(v[valid].sum() / count) if count else float("nan") for k, v in values.items()}
    return {k: v.masked_fill(~valid, float("nan")) for k, v in values.items()}


def target_hits(pred_items: torch.Tensor, targets: Jagged) -> tuple[torch.Tensor, torch.Tensor]:
    """Which predicted items are targets.

    pred_items: [B, K] item ids, 0 = empty slot. targets: Jagged with B rows of item ids.
    Returns hits [B, K] bool and num_targets [B] (distinct non-zero target items per user).
    A repeated prediction within a row counts once, at its first position; duplicate targets count once.
    """
    if pred_items.dim() != 2:
        raise DataError(f"pred_items must be [B, K], got shape {tuple(pred_items.shape)}")
    batch = pred_items.shape[0]
    if targets.num_rows != batch:
        raise DataError(f"targets has {targets.num_rows} rows but pred_items has {batch}")
    pred = pred_items.long()
    device = pred.device
    target_values = targets.values.long().to(device)
    if (pred < 0).any() or (target_values < 0).any():
        raise DataError("item ids must be >= 0 (0 = empty slot / padding)")
    keep = target_values > 0
    rows, target_values = targets.row_ids().to(device)[keep], target_values[keep]
    # Key (row, item) as one int64 so that membership is a sorted search over all targets at once.
    span = (
        int(max(int(pred.max()) if pred.numel() else 0, int(target_values.max()) if target_values.numel() else 0)) + 1
    )
    target_keys = torch.unique(rows * span + target_values)  # sorted, distinct
    num_targets = torch.bincount(target_keys // span, minlength=batch)[:batch]
    if target_keys.numel() == 0:
        return torch.zeros_like(pred, dtype=torch.bool), num_targets
    pred_keys = torch.arange(batch, device=device).unsqueeze(1) * span + pred
    found = torch.searchsorted(target_keys, pred_keys).clamp(max=target_keys.numel() - 1)
    hits = (target_keys[found] == pred_keys) & (pred > 0)
    # Mask repeats: after a stable sort, equal ids are adjacent and the first occurrence comes first.
    sorted_items, order = torch.sort(pred, dim=1, stable=True)
    repeat_sorted = torch.zeros_like(hits)
    repeat_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    repeat = torch.zeros_like(hits).scatter(1, order, repeat_sorted)
    return hits & ~repeat, num_targets


def topk_metrics(
    pred_items: torch.Tensor,
    targets: Jagged,
    ks: Iterable[int] = (5, 10, 20),
    metrics: Iterable[str] = TOPK_METRICS,
    reduce: bool = True,
) -> dict[str, float] | dict[str, torch.Tensor]:
    """Top-K metrics of ranked lists against target sets, keys like "recall@10", "ndcg@10".

    pred_items: [B, K] item ids, best first, 0 = empty slot (a list shorter than k is padded with
                empty slots; precision still divides by k).
    targets:    Jagged with B rows: the relevant items of each user (the set: duplicates count once).
    With T = |targets|, hits@k = targets among the first k predictions:
      recall@k = hits@k / T;  hr@k = 1 if hits@k > 0;  precision@k = hits@k / k;
      ndcg@k = sum_{hit ranks r <= k} 1/log2(r+1) / sum_{r=1}^{min(T,k)} 1/log2(r+1);
      mrr@k = 1 / rank of the first hit (0 if none within k).
    Users whose target row is empty are excluded (not counted as zeros).
    reduce=True: mean over the included users (NaN if none). reduce=False: per-user [B] tensors
    (float64) with NaN at excluded users.
    """
    ks, metrics = _check_ks(ks, metrics)
    hits, num_targets = target_hits(pred_items, targets)
    max_k = max(ks)
    hits = hits[:, :max_k].double()
    if hits.shape[1] < max_k:
        hits = torch.nn.functional.pad(hits, (0, max_k - hits.shape[1]))
    device = hits.device
    discount = 1.0 / torch.log2(torch.arange(2, max_k + 2, dtype=torch.float64, device=device))
    cum_hits = hits.cumsum(1)
    cum_dcg = (hits * discount).cumsum(1)
    ideal = torch.cat([discount.new_zeros(1), discount.cumsum(0)])  # ideal[n] = IDCG of n hits
    first_hit = torch.where(hits.any(1), hits.argmax(1).double() + 1, torch.inf)
    num_t = num_targets.double()
    valid = num_targets > 0
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        per = {
            "recall": h / num_t.clamp(min=1),
            "hr": (h > 0).double(),
            "precision": h / k,
            "ndcg": cum_dcg[:, k - 1] / ideal[num_targets.clamp(min=1, max=k)],
            "mrr": torch.where(first_hit <= k, 1.0 / first_hit, 0.0),
        }
        out.update({f"{m}@{k}": per[m] for m in metrics})
    return _reduce(out, valid, reduce)


def rank_of_target(scores: torch.Tensor, target: torch.Tensor, ties: str = "pessimistic") -> torch.Tensor:
    """1-based rank of each user's target item among all scored items.

    scores: [B, I] (set padding / excluded items to -inf first). target: [B] column index in scores.
    ties: "pessimistic" (target ranked after every item with an equal score), "optimistic"
    (before them), or "average" (the mean of the two, may be fractional).
    Returns [B] float64.
    """
    if ties not in TIES:
        raise ConfigError(f"unknown ties mode {ties!r}; valid: {', '.join(TIES)}")
    if scores.dim() != 2 or target.shape != (scores.shape[0],):
        raise DataError(f"expected scores [B, I] and target [B], got {tuple(scores.shape)} and {tuple(target.shape)}")
    target = target.long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= scores.shape[1]):
        raise DataError(f"target ids must lie in [0, {scores.shape[1]}), got {int(target.min())}..{int(target.max())}")
    if torch.isnan(scores).any():
        raise DataError("scores contain NaN; a rank is undefined")
    own = scores.gather(1, target.unsqueeze(1))
    # One pass per bound: pessimistic counts the target and every item scoring at least as high.
    pessimistic = (scores >= own).sum(1).double() if ties != "optimistic" else None
    optimistic = 1.0 + (scores > own).sum(1).double() if ties != "pessimistic" else None
    if pessimistic is not None and optimistic is not None:  # ties == "average"
        return (pessimistic + optimistic) / 2
    rank = pessimistic if ties == "pessimistic" else optimistic
    assert rank is not None
    return rank


def metrics_from_ranks(
    ranks: torch.Tensor, ks: Iterable[int] = (5, 10, 20), metrics: Iterable[str] = TOPK_METRICS, reduce: bool = True
) -> dict[str, float] | dict[str, torch.Tensor]:
    """Top-K metrics when each user has exactly one target at 1-based rank `ranks` [B].

    hit@k = rank <= k; recall@k = hr@k = hit; precision@k = hit / k; ndcg@k = hit / log2(rank + 1);
    mrr@k = hit / rank. Identical to `topk_metrics` with one target per user (for integer ranks).
    """
    ks, metrics = _check_ks(ks, metrics)
    ranks = ranks.double()
    if ranks.numel() and float(ranks.min()) < 1:
        raise DataError(f"ranks are 1-based; got {float(ranks.min())}")
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (ranks <= k).double()
        per = {"recall": hit, "hr": hit, "precision": hit / k, "ndcg": hit / torch.log2(ranks + 1), "mrr": hit / ranks}
        out.update({f"{m}@{k}": per[m] for m in metrics})
    return _reduce(out, torch.ones_like(ranks, dtype=torch.bool), reduce)
