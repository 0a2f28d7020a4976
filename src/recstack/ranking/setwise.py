"""Grouped set-wise ranking (OnePiece, arXiv 2509.18091): candidate groups, the set-wise contrastive
loss, and a training batch source that keeps whole groups together.

A group is at most C candidates of one request that are encoded together (mutually visible).
How groups are formed:
  impression logs (world): the impressions of one request (the `request` column when the
      interactions have one, else the rows sharing user, history end and scenario), shuffled with
      a fixed seed and cut into groups of at most C; batches hold whole groups.
  positive-only logs (MovieLens): one positive and its freshly drawn negatives (same user, history
      and context: 1 + negatives_per_positive rows; evaluation samples form the same groups). Served
      groups hold up to C retrieved candidates, so set group_size = 1 + negatives_per_positive to serve
      groups the size the model was trained on.
  scoring / evaluation (no "setwise_group" input): rows with the same context (user, history row, scenario,
      request time when given) are one request; it is cut into groups of at most C in a deterministic
      pseudo-random order of (user, item) hashes (the paper's random grouping, reproducible).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from recstack.data.batch import Candidates
from recstack.data.dataset import TRAIN
from recstack.ranking.samples import SampleBuilder, Samples
from recstack.train import CallableBatchSource


def context_key(inputs: dict[str, Any]) -> torch.Tensor:
    """[N, F] long: rows with equal keys share the request context (user, history, scenario, times)."""
    users = inputs["users"].long()
    parts = [users.unsqueeze(1), inputs["history"].long()]
    if inputs.get("scenario") is not None:
        parts.append(inputs["scenario"].long().unsqueeze(1))
    if inputs.get("request_time") is not None:
        parts.append((inputs["request_time"].double() * 1000).round().long().unsqueeze(1))
    return torch.cat(parts, 1)


def hash_order(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[N] deterministic pseudo-random sort key of (user, item) pairs (order within a request)."""
    mixed = (users.long() * 1_000_003 + items.long() * 2_654_435_761) % 2_147_483_647
    return (mixed * 48_271) % 2_147_483_647


def group_grid(key: torch.Tensor, size: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Rows -> groups: key [N] or [N, F] (equal key = one request), order [N] (sort key within a request,
    default row order) -> [G, C'] row indices (-1 = empty slot), C' <= size; each request is cut into
    ceil(n / size) groups of consecutive rows in `order`."""
    n = key.shape[0]
    device = key.device
    if n == 0:
        return torch.full((0, 1), -1, dtype=torch.long, device=device)
    _, inverse = (
        torch.unique(key, dim=0, return_inverse=True) if key.dim() == 2 else torch.unique(key, return_inverse=True)
    )
    first = torch.argsort(order, stable=True) if order is not None else torch.arange(n, device=device)
    rows = first[torch.argsort(inverse[first], stable=True)]  # by request, then by `order`
    request = inverse[rows]
    counts = torch.bincount(inverse)
    position = torch.arange(n, device=device) - (torch.cumsum(counts, 0) - counts)[request]
    chunks = (counts + size - 1) // size
    group = (torch.cumsum(chunks, 0) - chunks)[request] + position // size
    slot = position % size
    grid = torch.full((int(chunks.sum()), int(slot.max()) + 1), -1, dtype=torch.long, device=device)
    grid[group, slot] = rows
    return grid


def setwise_contrastive_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    temperature: float = 1.0,
    denominator: Literal["all", "negatives"] = "all",
) -> torch.Tensor:
    """Mean over positives of -log softmax of the positive among its group's candidates.

    logits, labels, valid: [G, C] (labels > 0.5 = positive; invalid slots take no part).
    denominator "all": the softmax runs over all C candidates of the group (as the paper states);
    "negatives": over the positive and the group's negatives only (other positives left out).
    Groups without a positive add nothing; 0 when the batch has no positive.
    """
    z = (logits.float() / temperature).masked_fill(~valid, float("-inf"))
    positive = (labels > 0.5) & valid
    if denominator == "all":
        log_norm = torch.logsumexp(z, dim=1, keepdim=True).expand_as(z)
    else:
        negatives = torch.logsumexp(z.masked_fill(positive, float("-inf")), dim=1, keepdim=True)
        log_norm = torch.logaddexp(z, negatives.expand_as(z))
    per_positive = torch.where(positive, log_norm - z, torch.zeros_like(z))
    return per_positive.sum() / positive.sum().clamp(min=1)


def request_groups(keys: np.ndarray, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys [N] or [N, F] ints (equal = one request) -> (rows [N] ordered by group, offsets [G + 1]);
    requests are shuffled inside with a fixed seed, then cut into groups of at most `size`."""
    keys = keys.reshape(len(keys), -1)
    tie = np.random.default_rng(seed).random(len(keys))
    grid = group_grid(torch.from_numpy(keys.astype(np.int64)), size, torch.from_numpy(tie))
    lengths = (grid >= 0).sum(1)
    rows = grid[grid >= 0]  # row-major: group by group
    return rows, torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])


def grouped_source(
    rows: torch.Tensor, offsets: torch.Tensor, collate, groups_per_batch: int, seed: int
) -> CallableBatchSource:
    """Batches of whole groups: collate(rows [n]) -> inputs; adds "setwise_group" [n] (the group of each row)."""
    lengths = offsets[1:] - offsets[:-1]

    def collate_groups(groups: torch.Tensor) -> dict[str, Any]:
        size = lengths[groups]
        local = torch.repeat_interleave(torch.arange(groups.numel()), size)
        start = torch.repeat_interleave(offsets[groups], size)
        within = torch.arange(int(size.sum())) - torch.repeat_interleave(torch.cumsum(size, 0) - size, size)
        inputs = collate(rows[start + within])
        inputs["setwise_group"] = local
        return inputs

    return CallableBatchSource(lengths.numel(), collate_groups, max(1, groups_per_batch), shuffle=True, seed=seed)


def setwise_train_source(
    builder: SampleBuilder,
    train: Samples,
    candidates: Candidates | None,
    group_size: int,
    max_history: int,
    batch_size: int,
    seed: int,
) -> CallableBatchSource:
    """Training batches of whole groups (about `batch_size` rows) with "setwise_group" [N] (module docstring)."""
    n = builder.config.negatives_per_positive
    if builder.positive_only and n > 0:
        consumed = builder.consumed_keys(builder.split == TRAIN)
        pool = builder.candidate_pool(candidates, None, consumed)

        def collate(rows: torch.Tensor) -> dict[str, Any]:  # a positive + its fresh negatives = one group
            inputs = builder.with_negatives(train.select(rows), n, consumed, pool).inputs(max_history)
            groups = torch.arange(rows.numel())
            inputs["setwise_group"] = torch.cat([groups, groups.repeat_interleave(n)])
            return inputs

        return CallableBatchSource(len(train), collate, max(1, batch_size // (1 + n)), shuffle=True, seed=seed)
    inter = builder.dataset.interactions
    if "request" in inter.columns:  # train samples are the train rows in table order
        keys = inter["request"].to_numpy()[np.flatnonzero(builder.split == TRAIN)]
    else:
        parts = [train.users, train.history_end] + ([train.scenario] if train.scenario is not None else [])
        keys = torch.stack(parts, 1).numpy()
    rows, offsets = request_groups(keys, group_size, seed)
    return grouped_source(rows, offsets, lambda r: train.inputs(max_history, r), batch_size // group_size, seed)


def request_order(samples: Samples) -> torch.Tensor:
    """[N] order that puts the rows of one request context (user, history end, time) next to each other."""
    keys = [samples.users.numpy(), samples.history_end.numpy()]
    if samples.time is not None:
        keys.append(samples.time.numpy())
    return torch.from_numpy(np.lexsort(keys[::-1]))
