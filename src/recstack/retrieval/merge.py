"""Merge the candidates of several retrieval channels into one list per user, and report on it.

merge_candidates: each channel contributes its top `quota` items; scores are normalised per channel
("rank": 1 / (rank + 1), comparable across channels; "raw": the channel's own score); an item found
by several channels keeps its best normalised score and the union of their channel tags; rows are
sorted by merged score (ties: the earlier channel in the dict, then the better rank within it, which
interleaves channels round-robin under "rank") and cut to `k_total`. The merged Candidates also
carry each channel's rank evidence per item (`channel_scores`), which the page can weigh. A quota
above what a channel returned (a catalogue smaller than the quota) is clipped with a warning.
Vectorised over the batch: the only Python loops run over channels and channel tag bits.
A learned alternative (quotas and order fitted on valid) is in retrieval/learned_merge.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError


@dataclass
class MergeConfig:
    quotas: dict[str, int] | None = None  # channel -> items taken; a channel not named gives all
    k_total: int = 500  # length of the merged list
    normalise: Literal["rank", "raw"] = "rank"  # per-channel score before de-duplication
    learned: bool = False
    """learn the quotas and the merged order on the valid split (retrieval/learned_merge.py) instead of
    the rank merge; never below the best single channel's recall@k_total on valid"""
    pool: int | None = None
    """learned merge: items each channel offers (None = k_total; at least k_total)"""

    def __post_init__(self) -> None:
        if self.learned and self.quotas:
            raise ConfigError("merge.quotas: a learned merge chooses the quotas itself; set merge.pool instead")
        if self.pool is not None and not self.learned:
            raise ConfigError("merge.pool: only a learned merge (merge.learned: true) reads it")
        if self.pool is not None and self.pool < self.k_total:
            raise ConfigError(f"merge.pool ({self.pool}) must be >= k_total ({self.k_total})")


def merge_candidates(
    channel_candidates: dict[str, Candidates],
    quotas: dict[str, int] | None,
    k_total: int,
    normalise: str = MergeConfig.normalise,
) -> Candidates:
    """Merge per-channel Candidates (each [B, K_c]) into Candidates [B, k_total].

    A single-channel Candidates is tagged with its dict key (so two configurations of one retriever
    stay apart); an already merged one keeps its own channel names.
    """
    if not channel_candidates:
        raise DataError("merge_candidates: no channels given")
    if normalise not in ("rank", "raw"):
        raise ConfigError(f"normalise: {normalise!r} is not one of 'rank', 'raw'")
    if k_total < 1:
        raise ConfigError(f"k_total must be >= 1, got {k_total}")
    quotas = dict(quotas or {})
    unknown = sorted(set(quotas) - set(channel_candidates))
    if unknown:
        raise ConfigError(f"quotas.{unknown[0]}: no such channel; channels: {', '.join(channel_candidates)}")
    sizes = {name: c.items.shape[0] for name, c in channel_candidates.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"merge_candidates: channels have different batch sizes {sizes}")
    batch = next(iter(sizes.values()))

    names: list[str] = []
    item_parts, score_parts, mask_parts, evidence = [], [], [], []
    for key, cands in channel_candidates.items():
        quota = quotas.get(key, cands.k)
        if quota < 0:
            raise ConfigError(f"quotas.{key}: must be >= 0, got {quota}")
        if quota > cands.k:
            warnings.warn(
                f"quotas.{key}: channel {key!r} returned {cands.k} candidates, fewer than its quota of "
                f"{quota} (a smaller catalogue?); it gives {cands.k}",
                stacklevel=2,
            )
            quota = cands.k
        top_items, top_scores = cands.items[:, :quota].long(), cands.scores[:, :quota].float()
        own_names = [key] if len(cands.channel_names) == 1 else cands.channel_names
        mask = torch.zeros_like(top_items)
        for bit, name in enumerate(own_names):  # re-map this channel's tag bits into the union
            if name not in names:
                names.append(name)
            mask |= ((cands.channels[:, :quota].long() >> bit) & 1) << names.index(name)
        reciprocal_rank = (1.0 / torch.arange(1, top_items.shape[1] + 1, dtype=torch.float32)).expand_as(top_scores)
        if normalise == "rank":
            top_scores = reciprocal_rank
        # An already merged input brings its own per-channel evidence; a plain channel has one column.
        own = cands.channel_scores[:, :quota] if cands.channel_scores is not None else reciprocal_rank.unsqueeze(-1)
        evidence.append((own, [names.index(name) for name in own_names]))
        item_parts.append(top_items)
        score_parts.append(top_scores)
        mask_parts.append(mask)
    if len(names) > 63:
        raise DataError(f"merge_candidates: {len(names)} channel names do not fit a 63-bit tag mask")

    items, scores, masks = torch.cat(item_parts, 1), torch.cat(score_parts, 1), torch.cat(mask_parts, 1)
    width = int(items.max()) + 1 if items.numel() else 1
    rows = torch.arange(batch).unsqueeze(1).expand_as(items)
    position = torch.arange(items.shape[1]).unsqueeze(0).expand_as(items)
    valid = items > 0
    keys = (rows * width + items)[valid]
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    count = unique_keys.numel()
    best = torch.full((count,), float("-inf")).scatter_reduce(0, inverse, scores[valid], "amax")
    first = torch.full((count,), items.shape[1], dtype=torch.long).scatter_reduce(0, inverse, position[valid], "amin")
    # Each channel's evidence in the union's columns, [B, sum quotas, C]; then the best per merged item.
    spread = []
    for own, columns in evidence:
        block = torch.zeros(*own.shape[:2], len(names))
        block[..., columns] = own
        spread.append(block)
    entry_evidence = torch.cat(spread, 1)[valid]  # [V, C]
    merged_evidence = torch.zeros(count, len(names)).scatter_reduce(
        0, inverse.unsqueeze(1).expand_as(entry_evidence), entry_evidence, "amax"
    )
    merged_mask = torch.zeros(count, dtype=torch.long)
    for bit in range(len(names)):  # OR of tags, one bit at a time (no scatter-or in torch)
        hit = torch.zeros(count, dtype=torch.long).scatter_reduce(0, inverse, (masks[valid] >> bit) & 1, "amax")
        merged_mask |= hit << bit

    # sort by (row, -score, first position): successive stable sorts, least significant key first
    order = torch.argsort(first, stable=True)
    order = order[torch.argsort(-best[order], stable=True)]
    merged_rows = unique_keys // width
    order = order[torch.argsort(merged_rows[order], stable=True)]
    sorted_rows = merged_rows[order]
    row_starts = torch.searchsorted(sorted_rows, torch.arange(batch))
    rank = torch.arange(count) - row_starts[sorted_rows]
    keep = rank < k_total
    out_items = torch.zeros((batch, k_total), dtype=torch.long)
    out_scores = torch.full((batch, k_total), float("-inf"))
    out_masks = torch.zeros((batch, k_total), dtype=torch.long)
    out_evidence = torch.zeros((batch, k_total, len(names)))
    target_rows, target_cols, kept = sorted_rows[keep], rank[keep], order[keep]
    out_items[target_rows, target_cols] = unique_keys[kept] % width
    out_scores[target_rows, target_cols] = best[kept]
    out_masks[target_rows, target_cols] = merged_mask[kept]
    out_evidence[target_rows, target_cols] = merged_evidence[kept]
    return Candidates(out_items, out_scores, out_masks, names, out_evidence)


def _hit_columns(items: torch.Tensor, targets: Jagged) -> torch.Tensor:
    """[N] column of each target value within its row of items [B, K], or -1 when absent."""
    target_items = targets.values.long()
    if items.numel() == 0 or target_items.numel() == 0:
        return torch.full_like(target_items, -1)
    width = max(int(items.max()), int(target_items.max())) + 1
    rows = torch.arange(items.shape[0]).unsqueeze(1)
    keys = torch.where(items > 0, rows * width + items.long(), -1).flatten()
    sorted_keys, order = torch.sort(keys)
    wanted = targets.row_ids() * width + target_items
    slot = torch.searchsorted(sorted_keys, wanted).clamp(max=keys.numel() - 1)
    return torch.where(sorted_keys[slot] == wanted, order[slot] % items.shape[1], -1)


def _ndcg(items: torch.Tensor, targets: Jagged, k: int) -> float:
    from recstack.eval.topk import topk_metrics

    return float(topk_metrics(items[:, :k], targets, [k], ("ndcg",))[f"ndcg@{k}"])


def channel_report(
    channel_candidates: dict[str, Candidates], merged: Candidates, targets: Jagged, ks: list[int] | tuple[int, ...]
) -> dict:
    """Recall@K per channel and for the merged list, and what each channel alone contributes.

    targets: Jagged with one row per batch row (the held-out items). Recall@K = hits in the top K /
    number of targets, averaged over users with at least one target. exclusive@K[c] = the same average
    counting only merged top-K hits tagged with channel c alone (a composite channel: with its own
    sub-channels only); shared@K counts hits found by two or more channels, so merged recall = sum of
    exclusive + shared. Returns
    {"recall@K": {channel..., "merged": r}, "ndcg@K": {channel..., "merged": n} (each list's own order;
    the merged order is merge's, before the ranker), "exclusive@K": {channel: r}, "shared@K": r, "users": n}.
    """
    if targets.num_rows != merged.items.shape[0]:
        raise DataError(f"channel_report: targets have {targets.num_rows} rows, candidates {merged.items.shape[0]}")
    lengths = targets.lengths().float()
    has_targets = lengths > 0
    users = int(has_targets.sum())
    target_rows = targets.row_ids()

    def average(per_target: torch.Tensor) -> float:
        per_user = torch.zeros(targets.num_rows).index_add_(0, target_rows, per_target.float())
        return float((per_user[has_targets] / lengths[has_targets]).mean()) if users else 0.0

    report: dict = {"users": users}
    merged_col = _hit_columns(merged.items, targets)
    for k in ks:
        recall = {name: average(_hit_columns(c.items[:, :k], targets) >= 0) for name, c in channel_candidates.items()}
        in_top = (merged_col >= 0) & (merged_col < k)
        recall["merged"] = average(in_top)
        tag = torch.where(in_top, merged.channels[target_rows, merged_col.clamp(min=0)], 0)
        owned = torch.zeros_like(in_top)
        exclusive = {}
        for name, cands in channel_candidates.items():
            # a composite channel (e.g. u2i2i) owns every tag bit of its own sub-channels
            own_names = [name] if len(cands.channel_names) == 1 else cands.channel_names
            bits = sum(1 << merged.channel_names.index(n) for n in own_names if n in merged.channel_names)
            alone = in_top & (tag != 0) & ((tag & ~bits) == 0) if bits else torch.zeros_like(in_top)
            owned |= alone
            exclusive[name] = average(alone)
        report[f"recall@{k}"] = recall
        ndcg = {name: _ndcg(c.items, targets, k) for name, c in channel_candidates.items()}
        ndcg["merged"] = _ndcg(merged.items, targets, k)
        report[f"ndcg@{k}"] = ndcg
        report[f"exclusive@{k}"] = exclusive
        report[f"shared@{k}"] = average(in_top & ~owned)
    return report
