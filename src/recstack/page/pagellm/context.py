"""PageContext: what PageLLM reads for B requests, cut from PageInputs.

The pool is the top `pool` candidates by fused score, in that order (pool column 0 = the fused page's
first item). Candidate features (F = tasks + channels + 2): the ranker's task probabilities, each
channel's rank evidence, the fused score min-max scaled within the pool, and 1 / (fused rank + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recstack.page.base import PageInputs, contains, history_mask, minmax_rows


@dataclass
class PageContext:
    """items [B, N] pool item ids (0 = empty or unusable); columns [B, N] their merged-candidate
    columns; features [B, N, F]; history [B, H] last history items, most recent last (0 = padding);
    engaged [B, N] bool, the held-out targets in the pool (all False at serving time)."""

    items: torch.Tensor
    columns: torch.Tensor
    features: torch.Tensor
    history: torch.Tensor
    engaged: torch.Tensor

    def __len__(self) -> int:
        return self.items.shape[0]

    @property
    def valid(self) -> torch.Tensor:
        """[B, N] pool slots holding a usable item."""
        return self.items > 0

    def repeat(self, times: int) -> PageContext:
        """The B requests `times` over, stacked: [times * B, ...] (scoring two pages of a pair at once)."""
        return PageContext(
            *(torch.cat([t] * times) for t in (self.items, self.columns, self.features, self.history, self.engaged))
        )

    def select(self, rows: torch.Tensor) -> PageContext:
        return PageContext(
            self.items[rows], self.columns[rows], self.features[rows], self.history[rows], self.engaged[rows]
        )


def build_context(inputs: PageInputs, fused: torch.Tensor, pool: int, history_len: int) -> PageContext:
    """fused: [B, K] the fused page score of every merged candidate."""
    cands = inputs.candidates
    usable = (cands.items > 0) & ~history_mask(inputs.batch, cands.items)
    fused = fused.masked_fill(~usable, float("-inf"))
    pool = min(pool, cands.k)
    top, columns = torch.topk(fused, pool, dim=1)
    real = torch.isfinite(top)
    items = cands.items.gather(1, columns).masked_fill(~real, 0)
    parts = [inputs.scores[task].gather(1, columns).unsqueeze(2) for task in sorted(inputs.scores)]
    if cands.channel_scores is not None:
        index = columns.unsqueeze(2).expand(-1, -1, cands.channel_scores.shape[2])
        parts.append(cands.channel_scores.gather(1, index))
    scaled = minmax_rows(top, real)
    rank = 1.0 / torch.arange(2, pool + 2, dtype=torch.float32).expand_as(scaled)
    parts += [scaled.unsqueeze(2), rank.unsqueeze(2)]
    features = torch.cat(parts, dim=2).float().masked_fill(~real.unsqueeze(2), 0.0)
    engaged = (
        contains(inputs.targets, items) if inputs.targets is not None else torch.zeros_like(items, dtype=torch.bool)
    )
    return PageContext(items, columns, features, last_items(inputs, history_len), engaged)


def last_items(inputs: PageInputs, length: int) -> torch.Tensor:
    """[B, length] the most recent history items, right-aligned, 0-padded on the left."""
    history = inputs.batch.history
    lengths = history.lengths()
    rows = history.row_ids()
    # position counted from the end of each row: 0 = most recent
    from_end = history.offsets[1:][rows] - 1 - torch.arange(history.values.numel())
    keep = from_end < length
    out = torch.zeros(lengths.numel(), length, dtype=torch.long)
    out[rows[keep], length - 1 - from_end[keep]] = history.values[keep].long()
    return out
