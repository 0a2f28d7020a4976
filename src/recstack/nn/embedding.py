"""Embedding helpers for id and side-feature fields (FuxiCTR-style field embeddings).

- `id_embedding`: an nn.Embedding whose row 0 (padding / unknown id) is zero and stays out of the init.
- `CategoricalFields`: one `FeatureBag` per categorical column of a fixed table (items, users), so
  each column is its own field: rows [...] -> [..., C, D] (multi-valued cells are mean-pooled).
- `NumericTable`: standardised numeric columns of a fixed table projected to one field: [...] -> [..., D].
- `apply_unique`: run a per-id encoder once per distinct id of a batch (histories repeat items a lot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.categorical import FeatureBag, TokenTable


def id_embedding(num_ids: int, dim: int) -> nn.Embedding:
    """[num_ids, dim] table, N(0, 1/dim) init, row 0 zero and never updated (padding_idx)."""
    embedding = nn.Embedding(num_ids, dim, padding_idx=0)
    nn.init.normal_(embedding.weight, std=dim**-0.5)
    with torch.no_grad():
        embedding.weight[0].zero_()
    return embedding


def apply_unique(
    encode: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, num_ids: int | None = None
) -> torch.Tensor:
    """encode(ids) for ids [...] in 0..num_ids-1, computed once per distinct id: [...] -> [..., D].

    When the id space is no larger than the batch, the whole table is encoded (no sort needed).
    """
    if num_ids is not None and num_ids <= ids.numel():
        return F.embedding(ids, encode(torch.arange(num_ids, device=ids.device)))
    unique, inverse = torch.unique(ids, return_inverse=True)
    return F.embedding(inverse, encode(unique))  # embedding's backward is a fast scatter-add


class CategoricalFields(nn.Module):
    """One embedding field per column: rows [...] -> [..., num_columns, dim].

    shapes: per column (vocabulary size, total token count) of its TokenTable; the token tables
    themselves live in buffers (saved with the weights) and are filled by `set_tables`.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], num_rows: int, dim: int) -> None:
        super().__init__()
        self.bags = nn.ModuleList(FeatureBag(vocab, tokens, num_rows, dim) for vocab, tokens in shapes)

    def __len__(self) -> int:
        return len(self.bags)

    def set_tables(self, tables: Sequence[TokenTable]) -> CategoricalFields:
        for bag, table in zip(self.bags, tables):
            cast(FeatureBag, bag).set_tokens(table)
        return self

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.stack([bag(rows) for bag in self.bags], dim=-2)  # a loop over columns


class NumericTable(nn.Module):
    """Numeric side features of a fixed table, looked up by row and projected: rows [...] -> [..., dim].

    The table [num_rows, F] is a buffer (standardised by the caller; row 0 and missing values = 0).
    """

    values: torch.Tensor

    def __init__(self, num_rows: int, num_features: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.zeros(num_rows, num_features))
        self.project = nn.Linear(num_features, dim)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.project(self.values[rows])
