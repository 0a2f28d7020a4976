"""CausalSequenceEncoder: item ids [B, T] -> hidden states [B, T, D] through a stack of causal blocks.

The shared frame of SASRec- and HSTU-style models: item embedding (optionally times sqrt(D)) +
learned absolute positions, dropout, blocks that each take (x, mask, bias), an optional final
LayerNorm. Rows are right-aligned: padding (item 0) on the left, the most recent item in column T-1.
Padding positions are zeroed after every block so they never carry signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from recstack.nn.attention import causal_mask
from recstack.nn.positional import LearnedPositionalEmbedding, RelativeAttentionBias
from recstack.nn.reproducible import LayerNorm


class CausalSequenceEncoder(nn.Module):
    """forward(items [B, T] int64, timestamps [B, T] | None) -> [B, T, D].

    blocks:          modules called as block(x [B, T, D], mask [B, T, T] bool, bias [B|1, T, T] | None).
    relative_bias:   produces the additive attention bias from positions / timestamps (HSTU), or None.
    positions:       "learned" absolute positions (count_from "end" or "start"), or "none".
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        max_len: int,
        blocks: Sequence[nn.Module],
        dropout: float = 0.2,
        positions: Literal["learned", "none"] = "learned",
        count_from: Literal["end", "start"] = "end",
        scale_embedding: bool = True,
        final_norm: bool = True,
        relative_bias: RelativeAttentionBias | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.embed_scale = math.sqrt(dim) if scale_embedding else 1.0
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.positions = LearnedPositionalEmbedding(max_len, dim, count_from) if positions == "learned" else None
        if self.positions is not None:
            nn.init.normal_(self.positions.table.weight, std=init_std)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(blocks)
        self.relative_bias = relative_bias
        self.final_norm = LayerNorm(dim, eps=1e-8) if final_norm else nn.Identity()

    def forward(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        valid = items > 0
        keep = valid.unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.item_embedding(items) * self.embed_scale
        if self.positions is not None:
            x = x + self.positions(valid)
        x = self.drop(x) * keep
        mask = causal_mask(valid)
        bias = self.relative_bias(items.shape[1], timestamps) if self.relative_bias is not None else None
        for block in self.blocks:
            x = block(x, mask, bias) * keep
        return self.final_norm(x)
