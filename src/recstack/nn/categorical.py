"""Categorical side features of a fixed table (items, users) as token bags, and their embedding.

`categorical_tokens` turns columns of a Polars table into one token list per row ("genres=Action",
"genres=Comedy", "gender=F"), with weight 1 / (tokens of that column in that row), so that
`FeatureBag` embeds a row as the sum over columns of the mean of each column's token embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from recstack.data.jagged import Jagged
from recstack.errors import DataError


@dataclass
class TokenTable:
    """tokens: Jagged with one row per table row (row 0 = padding, empty); weights aligned with tokens.values."""

    tokens: Jagged
    weights: torch.Tensor
    vocab: list[str]
    columns: list[str]


def is_categorical(frame: pl.DataFrame, column: str, max_ratio: float) -> bool:
    """String, list-of-string or integer column with at most `max_ratio` distinct values per row."""
    dtype = frame.schema[column]
    kind_ok = (
        dtype in (pl.String, pl.Categorical)
        or dtype.is_integer()
        or (isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Categorical))
    )
    if not kind_ok or frame.height == 0:
        return False
    distinct = frame[column].drop_nulls()
    distinct = distinct.list.join("|") if isinstance(dtype, pl.List) else distinct
    return distinct.n_unique() <= max_ratio * frame.height


def categorical_tokens(
    frame: pl.DataFrame, key: str, num_rows: int, columns: list[str], separator: str = r"\s*[|,]\s*"
) -> TokenTable:
    """Token bags of `columns` for rows keyed by integer column `key` (0 < key < num_rows).

    String cells are split on the regex `separator`; list cells give one token per element; integers
    one token. Empty and missing cells give no token.
    """
    parts = []
    for column in columns:  # a loop over feature columns, not rows
        if column not in frame.columns:
            raise DataError(f"feature column {column!r} is not in the table (columns: {', '.join(frame.columns)})")
        dtype = frame.schema[column]
        cell = pl.col(column)
        if isinstance(dtype, pl.List):
            values = cell.list.eval(pl.element().cast(pl.String))
        elif dtype.is_integer():
            values = cell.cast(pl.String).str.split("\x00")  # one-element list
        else:
            values = cell.cast(pl.String).str.strip_chars().str.split(separator, literal=False)
        part = (
            frame.select(pl.col(key).cast(pl.Int64).alias("row"), values.alias("value"))
            .explode("value")
            .drop_nulls("value")
            .filter(pl.col("value") != "")
            .unique(["row", "value"], maintain_order=True)
            .with_columns(pl.lit(column).alias("column"))
        )
        parts.append(part)
    empty = pl.DataFrame(schema={"row": pl.Int64, "value": pl.String, "column": pl.String})
    long = pl.concat(parts) if parts else empty
    long = long.with_columns((pl.col("column") + "=" + pl.col("value")).alias("token"))
    vocab = sorted(long["token"].unique().to_list())
    long = long.with_columns(
        pl.col("token").replace_strict(vocab, list(range(len(vocab))), return_dtype=pl.Int64).alias("id"),
        (1.0 / pl.len().over(["row", "column"])).alias("weight"),
    ).sort(["row", "id"])
    rows = long["row"].to_numpy()
    if rows.size and (rows.min() <= 0 or rows.max() >= num_rows):
        raise DataError(f"{key} ids must lie in 1..{num_rows - 1}, found {rows.min()}..{rows.max()}")
    tokens = Jagged.from_sorted_keys(rows.astype(np.int64), torch.from_numpy(long["id"].to_numpy().copy()), num_rows)
    weights = torch.from_numpy(long["weight"].to_numpy().astype(np.float32))
    return TokenTable(tokens, weights, vocab, list(columns))


class FeatureBag(nn.Module):
    """Embeds rows of a fixed token table: [...] row ids -> [..., dim] (weighted sum of token embeddings).

    The token table lives in buffers (saved with the weights); `set_tokens` fills them.
    """

    token_ids: torch.Tensor
    token_weights: torch.Tensor
    token_offsets: torch.Tensor

    def __init__(self, vocab_size: int, num_tokens: int, num_rows: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(max(vocab_size, 1), dim, mode="sum")
        nn.init.normal_(self.bag.weight, std=dim**-0.5)
        self.register_buffer("token_ids", torch.zeros(num_tokens, dtype=torch.long))
        self.register_buffer("token_weights", torch.zeros(num_tokens))
        self.register_buffer("token_offsets", torch.zeros(num_rows + 1, dtype=torch.long))

    def set_tokens(self, table: TokenTable) -> FeatureBag:
        if table.tokens.num_rows + 1 != self.token_offsets.numel() or table.weights.numel() != self.token_ids.numel():
            raise DataError("FeatureBag.set_tokens: the token table does not match the sizes given at construction")
        self.token_ids.copy_(table.tokens.values)
        self.token_weights.copy_(table.weights)
        self.token_offsets.copy_(table.tokens.offsets)
        return self

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        flat = rows.reshape(-1)
        starts = self.token_offsets[flat]
        lengths = self.token_offsets[flat + 1] - starts
        offsets = torch.cumsum(lengths, 0) - lengths  # start of each bag in the gathered tokens
        total = int(lengths.sum())
        # Position of every gathered token in the table: its row's start + its rank within the row.
        index = torch.repeat_interleave(starts - offsets, lengths, output_size=total) + torch.arange(
            total, device=flat.device
        )
        out = self.bag(self.token_ids[index], offsets, per_sample_weights=self.token_weights[index])
        return out.view(*rows.shape, -1)
