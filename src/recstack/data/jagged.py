"""Jagged tensors: variable-length rows stored as flat `values` plus `offsets` (never padded to a global max)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Jagged:
    """Rows of different lengths.

    values:  [N] (or [N, D]) the concatenated rows.
    offsets: [B + 1] int64, row b is values[offsets[b]:offsets[b + 1]].
    """

    values: torch.Tensor
    offsets: torch.Tensor

    def __post_init__(self) -> None:
        if self.offsets.dim() != 1 or self.offsets.numel() < 1:
            raise ValueError("offsets must be 1-D with at least one entry")
        if int(self.offsets[-1]) != self.values.shape[0]:
            raise ValueError(f"offsets end at {int(self.offsets[-1])} but there are {self.values.shape[0]} values")

    # ---- construction -------------------------------------------------------------------------
    @staticmethod
    def from_lengths(values: torch.Tensor, lengths: torch.Tensor) -> Jagged:
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.long)
        torch.cumsum(lengths.long(), 0, out=offsets[1:])
        return Jagged(values, offsets)

    @staticmethod
    def from_lists(rows: list[list[int]], dtype: torch.dtype = torch.long) -> Jagged:
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        flat = [v for r in rows for v in r]
        return Jagged.from_lengths(torch.tensor(flat, dtype=dtype), lengths)

    @staticmethod
    def from_sorted_keys(keys: np.ndarray | torch.Tensor, values: torch.Tensor, num_rows: int) -> Jagged:
        """Group `values` by row id `keys` (already sorted ascending) into `num_rows` rows."""
        keys = torch.as_tensor(np.asarray(keys, dtype=np.int64)) if isinstance(keys, np.ndarray) else keys.long()
        lengths = torch.bincount(keys, minlength=num_rows)
        return Jagged.from_lengths(values, lengths)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self.offsets.numel() - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def row_ids(self) -> torch.Tensor:
        """[N] the row each value belongs to."""
        return torch.repeat_interleave(torch.arange(self.num_rows), self.lengths())

    def row(self, b: int) -> torch.Tensor:
        return self.values[int(self.offsets[b]) : int(self.offsets[b + 1])]

    def tolist(self) -> list[list]:
        return [self.row(b).tolist() for b in range(self.num_rows)]

    # ---- vectorised ops -----------------------------------------------------------------------
    def select(self, rows: torch.Tensor) -> Jagged:
        """Rows `rows` (any order, repeats allowed) as a new Jagged, without a Python loop."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = torch.zeros(rows.numel() + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=offsets[1:])
        total = int(offsets[-1])
        within = torch.arange(total) - torch.repeat_interleave(offsets[:-1], lengths)
        gather = torch.repeat_interleave(starts, lengths) + within
        return Jagged(self.values[gather], offsets)

    def last(self, n: int) -> Jagged:
        """Keep at most the last `n` values of each row."""
        lengths = self.lengths()
        keep = lengths.clamp(max=n)
        new_offsets = torch.zeros_like(self.offsets)
        torch.cumsum(keep, 0, out=new_offsets[1:])
        total = int(new_offsets[-1])
        within = torch.arange(total) - torch.repeat_interleave(new_offsets[:-1], keep)
        gather = torch.repeat_interleave(self.offsets[1:] - keep, keep) + within
        return Jagged(self.values[gather], new_offsets)

    def to_padded(self, max_len: int | None = None, pad_value: int | float = 0, align: str = "right") -> torch.Tensor:
        """Dense [B, T] (T = max_len or the longest row). Rows longer than T keep their last T values.

        align="right" puts each row's last value in column T-1 (left padding, usual for causal models);
        align="left" starts each row at column 0.
        """
        lengths = self.lengths()
        t = int(lengths.max()) if max_len is None and lengths.numel() else (max_len or 0)
        src = self.last(t) if t else self
        lengths = src.lengths()
        out = torch.full((self.num_rows, t) + tuple(self.values.shape[1:]), pad_value, dtype=self.values.dtype)
        if src.values.shape[0] == 0:
            return out
        rows = src.row_ids()
        within = torch.arange(src.values.shape[0]) - src.offsets[:-1][rows]
        cols = within + (t - lengths[rows]) if align == "right" else within
        out[rows, cols] = src.values
        return out
