"""Beyond-accuracy metrics of recommendation lists: catalogue coverage, popularity bias, novelty.

All take pred_items [B, K] item ids with 0 = empty slot (ignored) and item ids 1..num_items.
"""

from __future__ import annotations

import torch

from recstack.errors import DataError


def recommendation_counts(pred_items: torch.Tensor, num_items: int) -> torch.Tensor:
    """[num_items + 1] how often each item appears in the lists (index 0 = empty slots, always 0)."""
    items = pred_items.reshape(-1).long()
    if items.numel() and (int(items.min()) < 0 or int(items.max()) > num_items):
        raise DataError(f"predicted item ids must lie in 0..{num_items}, got {int(items.min())}..{int(items.max())}")
    counts = torch.bincount(items, minlength=num_items + 1)
    counts[0] = 0
    return counts


def coverage_from_counts(counts: torch.Tensor) -> float:
    """Share of items 1..num_items recommended at least once, from `recommendation_counts`."""
    catalogue = counts.numel() - 1
    return float((counts[1:] > 0).sum()) / catalogue if catalogue > 0 else float("nan")


def coverage(pred_items: torch.Tensor, num_items: int) -> float:
    """Catalogue coverage: distinct recommended items / num_items."""
    return coverage_from_counts(recommendation_counts(pred_items, num_items))


def gini_index(counts: torch.Tensor) -> float:
    """Gini index of `counts` [n] (0 = every entry equal, (n-1)/n = everything on one entry).

    G = sum_i (2i - n - 1) c_(i) / (n sum c) with c_(i) sorted ascending, i = 1..n. NaN if all zero.
    """
    values = torch.sort(counts.reshape(-1).double()).values
    n, total = values.numel(), float(values.sum())
    if n == 0 or total == 0:
        return float("nan")
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64) - n - 1
    return float((weights * values).sum()) / (n * total)


def _check_popularity(pred_items: torch.Tensor, item_popularity: torch.Tensor) -> torch.Tensor:
    if item_popularity.dim() != 1 or item_popularity.numel() < 2:
        raise DataError("item_popularity must be [num_items + 1] (index 0 = padding)")
    recommendation_counts(pred_items, item_popularity.numel() - 1)  # validates the id range
    return item_popularity.double()


def popularity_bias(pred_items: torch.Tensor, item_popularity: torch.Tensor) -> dict[str, float]:
    """Popularity bias of the lists.

    item_popularity: [num_items + 1] interaction counts (e.g. `Dataset.item_popularity("train")`).
    "arp":  average recommendation popularity, mean over users (with a non-empty list) of the mean
            popularity of their recommended items.
    "gini": Gini index of how often each catalogue item is recommended (items never recommended
            count as 0); high = recommendations concentrate on few items.
    """
    popularity = _check_popularity(pred_items, item_popularity)
    items = pred_items.long()
    filled = (items > 0).double()
    per_user = (popularity[items] * filled).sum(1) / filled.sum(1).clamp(min=1)
    has_list = filled.sum(1) > 0
    arp = float(per_user[has_list].mean()) if has_list.any() else float("nan")
    counts = recommendation_counts(pred_items, popularity.numel() - 1)
    return {"arp": arp, "gini": gini_index(counts[1:])}


def novelty(pred_items: torch.Tensor, item_popularity: torch.Tensor) -> float:
    """Mean self-information -log2 p(i) of recommended items, p(i) = (pop(i) + 1) / (sum pop + num_items).

    The add-one smoothing keeps items never seen in training finite. Higher = less popular picks.
    """
    popularity = _check_popularity(pred_items, item_popularity)
    num_items = popularity.numel() - 1
    prob = (popularity + 1) / (float(popularity[1:].sum()) + num_items)
    items = pred_items.reshape(-1).long()
    items = items[items > 0]
    return float(-torch.log2(prob[items]).mean()) if items.numel() else float("nan")
