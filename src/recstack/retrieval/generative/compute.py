"""Compute accounting of generative retrievers: traced forward FLOPs per training sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def flops_per_sample(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Forward FLOPs of `model.loss(batch)` per batch row (FlopCounterMode, + CPU fused attention, which it
    does not count by itself). Grad mode stays on: FlopCounterMode's module hooks fail under no_grad."""

    def attention(q, k, v, *_, **__):
        return sdpa_flop_count(q, k, v)

    sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention}
    with FlopCounterMode(display=False, custom_mapping=sdpa) as counter:
        cast(Callable[[dict[str, torch.Tensor]], object], model.loss)(batch)
    return counter.get_total_flops() / batch["history_items"].shape[0]
