"""The data contract of the Trainer: a BatchSource yields the batches of one epoch for one rank.

The order of epoch e must be a function of (seed, e) only, so a resumed run sees the same batches
as an uninterrupted one, and every rank must get the same number of batches (DDP steps in lock-step).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from recstack.errors import DataError


@runtime_checkable
class BatchSource(Protocol):
    def num_batches(self, epoch: int, rank: int, world_size: int) -> int: ...

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[Any]: ...


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of range(num_rows) that depends on (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(mixed))


class CallableBatchSource:
    """Row indices, shuffled per epoch and sharded per rank, turned into batches by `collate`.

    `collate(rows: LongTensor[B]) -> batch` builds whatever the model's `loss` takes (padded
    sequences, sampled negatives, a UserBatch, ...). Each rank takes rows rank, rank + W, ... of the
    epoch's permutation; without drop_last the permutation is wrapped around so that every rank
    gets ceil(N / W) rows (a few rows then appear twice in an epoch, as with DistributedSampler).
    Randomness inside `collate` (negatives) should come from the global torch RNG, which the
    Trainer seeds and checkpoints.
    """

    def __init__(
        self,
        num_rows: int,
        collate: Callable[[torch.Tensor], Any],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_rows <= 0:
            raise DataError(f"CallableBatchSource: no rows to train on (num_rows={num_rows})")
        if batch_size <= 0:
            raise DataError(f"CallableBatchSource: batch_size must be > 0, got {batch_size}")
        self.num_rows, self.collate, self.batch_size = num_rows, collate, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last

    def _rows_per_rank(self, world_size: int) -> int:
        if self.drop_last:
            return self.num_rows // world_size
        return math.ceil(self.num_rows / world_size)

    def num_batches(self, epoch: int, rank: int, world_size: int) -> int:
        rows = self._rows_per_rank(world_size)
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)

    def shard(self, epoch: int, rank: int, world_size: int) -> torch.Tensor:
        """This rank's row indices for `epoch`, in training order."""
        if self.shuffle:
            order = epoch_permutation(self.num_rows, self.seed, epoch)
        else:
            order = torch.arange(self.num_rows)
        per_rank = self._rows_per_rank(world_size)
        needed = per_rank * world_size
        if needed > self.num_rows:
            order = order.repeat(math.ceil(needed / self.num_rows))
        return order[:needed][rank::world_size]

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[Any]:
        rows = self.shard(epoch, rank, world_size)
        for b in range(self.num_batches(epoch, rank, world_size)):
            yield self.collate(rows[b * self.batch_size : (b + 1) * self.batch_size])


class TensorBatchSource(CallableBatchSource):
    """Batches of rows sliced from equally long tensors: each batch is `{name: tensor[rows]}`."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not tensors:
            raise DataError("TensorBatchSource: no tensors given")
        lengths = {name: int(t.shape[0]) for name, t in tensors.items()}
        first = next(iter(lengths))
        for name, n in lengths.items():
            if n != lengths[first]:
                raise DataError(f"TensorBatchSource: tensor {name!r} has {n} rows but {first!r} has {lengths[first]}")
        self.tensors = tensors
        super().__init__(lengths[first], self._slice, batch_size, shuffle, seed, drop_last)

    def _slice(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t[rows.to(t.device)] for name, t in self.tensors.items()}


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside dicts, lists, tuples, dataclasses (e.g. UserBatch, Jagged) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: move_to_device(getattr(batch, f.name), device) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **changes)
    return batch
