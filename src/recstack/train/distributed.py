"""Launch under torchrun without code changes: rank / world size from the environment, process
group set-up (gloo on CPU, NCCL on CUDA), DDP wrapping and the few collectives the Trainer needs.

With WORLD_SIZE unset or 1 every collective is a no-op, so single-process code pays nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn


def launched_distributed() -> bool:
    """True when started by torchrun (or similar) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(device: str | torch.device) -> torch.device:
    """`"cuda"` means this process's GPU (`cuda:LOCAL_RANK`) under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@dataclass
class DistContext:
    """This process's place in the job. Create with `DistContext.from_env()`, start with `setup`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @staticmethod
    def from_env() -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        return DistContext(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        """Initialise the process group unless someone already did (then it is theirs to destroy)."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        self.owns_group = True

    def close(self, barrier: bool = True) -> None:
        """Barrier (skipped after an error, when peers may be gone), then destroy the group if ours."""
        if self.enabled and dist.is_initialized():
            if barrier:
                dist.barrier()
            if self.owns_group:
                dist.destroy_process_group()
                self.owns_group = False

    def wrap(self, module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (the tensor must live on the backend's device)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_equal(self, value: int, device: torch.device) -> bool:
        """Whether every rank passed the same integer."""
        if not self.enabled:
            return True
        t = torch.tensor([value, -value], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t[0]) == -int(t[1])

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


class LossForward(nn.Module):
    """Routes `forward(batch)` to `model.loss(batch)`, so DDP's gradient hooks see the loss call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> Any:
        return cast(Callable[[Any], Any], self.model.loss)(batch)
