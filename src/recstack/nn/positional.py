"""Positional encodings for right-aligned (left-padded) item sequences.

LearnedPositionalEmbedding: absolute positions, a learned vector each (SASRec).
RelativeAttentionBias:      a learned scalar per relative-position bucket plus one per time-gap
                            bucket, added to the attention logits (HSTU's "rab").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class LearnedPositionalEmbedding(nn.Module):
    """[B, T] valid mask -> [B, T, D] position vectors.

    count_from="end": the position is the column of a right-aligned window of width max_len, so the
    most recent item always gets the same vector (what the original SASRec code does with its
    left-padded arrays). count_from="start": 1 for the oldest item in the window, ..., padding 0.
    """

    def __init__(self, max_len: int, dim: int, count_from: Literal["end", "start"] = "end") -> None:
        super().__init__()
        self.max_len, self.count_from = max_len, count_from
        self.table = nn.Embedding(max_len + 1, dim)

    def forward(self, valid: torch.Tensor) -> torch.Tensor:
        b, t = valid.shape
        if t > self.max_len:
            raise ValueError(f"sequence of length {t} is longer than max_len {self.max_len}")
        if self.count_from == "end":
            positions = torch.arange(self.max_len - t + 1, self.max_len + 1, device=valid.device).expand(b, t)
        else:
            positions = valid.long().cumsum(1) * valid.long()
        return self.table(positions)


def relative_position_buckets(t: int, num_buckets: int, device: torch.device | None = None) -> torch.Tensor:
    """[T, T] bucket of the distance i - j between query i and key j: exact up to num_buckets - 1, then clipped.

    Future keys (j > i) get bucket 0; the causal mask removes them anyway.
    """
    i = torch.arange(t, device=device)
    return (i.unsqueeze(1) - i.unsqueeze(0)).clamp(0, num_buckets - 1)


def log_time_buckets(timestamps: torch.Tensor, num_buckets: int, scale: float = 0.301) -> torch.Tensor:
    """[B, T] timestamps -> [B, T, T] bucket floor(ln(max(|t_i - t_j|, 1)) / scale), clipped to num_buckets - 1.

    scale = 0.301 is the divisor of Meta's generative-recommenders code (about 3.3 buckets per e-fold).
    """
    gap = (timestamps.unsqueeze(2) - timestamps.unsqueeze(1)).abs().clamp(min=1).double()
    return (gap.log() / scale).long().clamp(0, num_buckets - 1)


class RelativeAttentionBias(nn.Module):
    """rab[b, i, j] = w_pos[bucket(i - j)] + w_time[bucket(|t_i - t_j|)]  -> [B, T, T], shared by all heads.

    use_position / use_time switch each part off (no time part for order-only timestamps).
    """

    def __init__(
        self,
        max_len: int,
        num_time_buckets: int = 128,
        use_position: bool = True,
        use_time: bool = True,
        time_scale: float = 0.301,
    ) -> None:
        super().__init__()
        self.max_len, self.num_time_buckets, self.time_scale = max_len, num_time_buckets, time_scale
        self.position = nn.Parameter(torch.zeros(max_len)) if use_position else None
        self.time = nn.Parameter(torch.zeros(num_time_buckets)) if use_time else None

    @property
    def active(self) -> bool:
        return self.position is not None or self.time is not None

    def forward(self, t: int, timestamps: torch.Tensor | None = None) -> torch.Tensor | None:
        """timestamps: [B, T] or None. Returns [B or 1, T, T] (None when both parts are off)."""
        bias = None
        if self.position is not None:
            bias = self.position[relative_position_buckets(t, self.max_len, self.position.device)].unsqueeze(0)
        if self.time is not None and timestamps is not None:
            time_bias = self.time[log_time_buckets(timestamps, self.num_time_buckets, self.time_scale)]
            bias = time_bias if bias is None else bias + time_bias
        return bias
