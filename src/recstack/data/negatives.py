"""Negative samplers over item ids 1..num_items (0 = padding is never drawn).

All samplers return `[B, N]` int64 tensors and expose `log_prob(items)`, the log sampling
probability used for logQ correction in sampled / in-batch softmax.
"""

from __future__ import annotations

import math

import torch

from recstack.data.jagged import Jagged


class UniformSampler:
    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = num_items
        self.generator: torch.Generator | None = torch.Generator().manual_seed(seed)  # None: the global RNG

    def sample(self, batch_size: int, num_negatives: int) -> torch.Tensor:
        """[batch_size, num_negatives] items drawn uniformly from 1..num_items."""
        return torch.randint(1, self.num_items + 1, (batch_size, num_negatives), generator=self.generator)

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        return torch.full(items.shape, -math.log(self.num_items))


class PopularitySampler:
    """Draws items with probability proportional to count**alpha (word2vec-style alpha=0.75)."""

    def __init__(self, item_counts: torch.Tensor, alpha: float = 0.75, seed: int = 0) -> None:
        """item_counts: [num_items + 1] (index 0 = padding, ignored)."""
        weights = item_counts.double().clamp(min=0) ** alpha
        weights[0] = 0.0
        if float(weights.sum()) <= 0:
            raise ValueError("PopularitySampler needs at least one item with a positive count")
        self.probs = (weights / weights.sum()).float()
        self.generator: torch.Generator | None = torch.Generator().manual_seed(seed)  # None: the global RNG

    def sample(self, batch_size: int, num_negatives: int) -> torch.Tensor:
        flat = torch.multinomial(self.probs, batch_size * num_negatives, replacement=True, generator=self.generator)
        return flat.view(batch_size, num_negatives)

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        return torch.log(self.probs[items].clamp(min=1e-12))


def resample_positives(negatives: torch.Tensor, positives: Jagged, sampler, max_rounds: int = 10) -> torch.Tensor:
    """Replace negatives that are among the row's positives by fresh draws (a few rounds, vectorised).

    negatives: [B, N]; positives: Jagged with B rows. Collisions left after `max_rounds` are kept
    (with large catalogues they vanish after one round).
    """
    negatives = negatives.clone()
    b, n = negatives.shape
    num_items = int(max(negatives.max(), positives.values.max() if positives.values.numel() else 0)) + 1
    # Row-wise membership via a flat key row * num_items + item.
    pos_keys = positives.row_ids() * num_items + positives.values.long()
    pos_keys = torch.unique(pos_keys)
    rows = torch.arange(b).unsqueeze(1).expand(b, n)
    for _ in range(max_rounds):
        keys = rows * num_items + negatives
        hit = torch.isin(keys, pos_keys)
        if not bool(hit.any()):
            break
        negatives[hit] = sampler.sample(1, int(hit.sum()))[0]
    return negatives


def in_batch_logq(item_ids: torch.Tensor, item_log_prob: torch.Tensor) -> torch.Tensor:
    """logQ correction for in-batch negatives: subtract log p(item) from the logits of each column.

    item_ids: [B] the batch's positive items (the in-batch negatives for every row);
    item_log_prob: [num_items + 1] log of each item's chance to appear in a batch (e.g. its frequency).
    Returns [B] corrections to subtract from logits[:, j].
    """
    return item_log_prob[item_ids]
