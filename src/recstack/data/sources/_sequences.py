"""Order-only sequences: "<user> <item> <item> ..." files, and full sequences rebuilt from next-item samples.

Next-item sample files (RecBole `.train/.valid/.test.inter`, MiniOneRec csv) list, per row, a user's
recent history and the next item. `assemble_from_samples` places every history item and every target
at its position in the user's sequence (the caller computes each target's position), checks that all
rows agree on the item at each position and that no position is missing, and returns one row per
position: the user's full sequence, oldest first, with timestamp = position.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.sources._read import read_lines
from recstack.errors import DataError


def sequences_from_lines(path: Path) -> pl.DataFrame:
    """`<user> <item1> ... <itemN>` per line (oldest first) -> (user, item, timestamp = position).

    A user on two lines or a line with no item is an error (nothing is merged or dropped silently).
    """
    lines = read_lines(path).with_columns(tokens=pl.col("line").str.extract_all(r"\S+"))
    lines = lines.with_columns(user=pl.col("tokens").list.first(), items=pl.col("tokens").list.slice(1))
    empty = lines.filter(pl.col("items").list.len() == 0)
    if empty.height:
        raise DataError(f"{path}: line {empty['_line'][0]}: user {empty['user'][0]!r} has no items")
    repeated = lines.filter(pl.col("user").is_duplicated())
    if repeated.height:
        user = repeated["user"][0]
        numbers = repeated.filter(pl.col("user") == user)["_line"].to_list()
        raise DataError(f"{path}: user {user!r} appears on more than one line (lines {numbers[0]} and {numbers[1]})")
    return (
        lines.select("user", "items", timestamp=pl.int_ranges(0, pl.col("items").list.len(), dtype=pl.Int64))
        .explode("items", "timestamp")
        .rename({"items": "item"})
    )


def assemble_from_samples(samples: pl.DataFrame, origin: str) -> pl.DataFrame:
    """Rebuild full sequences from next-item samples.

    samples: user (str), history (List[str], oldest first, ending right before the target),
             target (str), position (Int64: the target's 0-based position in the user's sequence),
             split (str), file (str), _line (int).
    Returns (user, item, timestamp = position, split): a target position gets its sample's split,
    positions seen only inside histories are "train".
    """
    targets = samples.select("user", "position", item="target", split="split", file="file", _line="_line")
    duplicated = targets.filter(pl.struct("user", "position").is_duplicated())
    if duplicated.height:
        first = duplicated.row(0, named=True)
        raise DataError(
            f"{origin}: user {first['user']!r} has two samples predicting position "
            f"{first['position']} (e.g. {first['file']} line {first['_line']})"
        )
    history = (
        samples.select(
            "user",
            "file",
            "_line",
            item="history",
            position=pl.int_ranges(
                pl.col("position") - pl.col("history").list.len(), pl.col("position"), dtype=pl.Int64
            ),
        )
        .explode("item", "position")
        .drop_nulls("item")
        .with_columns(split=pl.lit("train"))
    )
    negative = history.filter(pl.col("position") < 0)
    if negative.height:
        first = negative.row(0, named=True)
        raise DataError(
            f"{origin}: {first['file']} line {first['_line']}: the history of user {first['user']!r} "
            "is longer than the target's position allows"
        )
    cells = pl.concat([targets.select(history.columns), history])
    conflicts = (
        cells.group_by("user", "position")
        .agg(pl.col("item").n_unique().alias("n"), pl.all().first())
        .filter(pl.col("n") > 1)
    )
    if conflicts.height:
        first = conflicts.sort("user", "position").row(0, named=True)
        seen = cells.filter((pl.col("user") == first["user"]) & (pl.col("position") == first["position"]))
        where = "; ".join(
            f"{r['file']} line {r['_line']}: {r['item']!r}"
            for r in seen.unique("item", maintain_order=True).head(2).iter_rows(named=True)
        )
        raise DataError(f"{origin}: samples disagree on item {first['position']} of user {first['user']!r} ({where})")
    # A target's split wins over "train" from a later history that mentions the same position.
    rank = pl.col("split").replace_strict({"train": 0, "valid": 1, "test": 2}, default=0, return_dtype=pl.Int8)
    sequence = cells.sort("user", "position", rank, descending=[False, False, True]).unique(
        ["user", "position"], keep="first", maintain_order=True
    )
    counts = sequence.group_by("user").agg(n=pl.len(), last=pl.col("position").max())
    gaps = counts.filter(pl.col("n") != pl.col("last") + 1)
    if gaps.height:
        user = gaps.sort("user")["user"][0]
        have = set(sequence.filter(pl.col("user") == user)["position"].to_list())
        hole = min(set(range(max(have) + 1)) - have)
        raise DataError(
            f"{origin}: no sample gives item {hole} of user {user!r}'s sequence (history rows missing or truncated)"
        )
    return sequence.select("user", "item", timestamp="position", split="split")
