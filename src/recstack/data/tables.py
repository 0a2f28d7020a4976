"""Canonical raw tables that every source produces, and their validation.

A source turns a public format into `RawTables` with raw (string) ids; `prepare` then filters,
remaps ids to contiguous ints (0 = padding), splits, and stores a `Dataset`.

interactions: user (str), item (str), timestamp (int64; unix seconds, or the position in the
              user's sequence when `timestamp_kind == "order"`), one or more label columns
              (numeric), optional scenario (str), event (str), split ("train"/"valid"/"test" when
              the source ships a fixed split).
items:        item (str), text fields (str), categorical (str) and numeric features.
users:        user (str), features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

import polars as pl

from recstack.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")
RESERVED_INTERACTION_COLUMNS = ("user", "item", "timestamp", "scenario", "event", "split")


@dataclass
class RawTables:
    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame = field(default_factory=lambda: pl.DataFrame({"item": pl.Series([], dtype=pl.Utf8)}))
    users: pl.DataFrame = field(default_factory=lambda: pl.DataFrame({"user": pl.Series([], dtype=pl.Utf8)}))
    labels: list[str] = field(default_factory=list)
    text_fields: list[str] = field(default_factory=list)
    timestamp_kind: Literal["unix_seconds", "unix_ms", "order"] = "unix_seconds"
    origin: str = ""  # file or folder the tables came from, used in error messages
    extra: dict = field(default_factory=dict)  # source-specific metadata (e.g. reference semantic IDs)

    def validate(self) -> RawTables:
        validate_raw(self)
        return self


def _require_columns(df: pl.DataFrame, columns: dict[str, tuple], table: str, origin: str) -> None:
    for column, allowed in columns.items():
        if column not in df.columns:
            raise DataError(
                f"{origin}: {table} table has no column {column!r} (columns present: {', '.join(df.columns) or 'none'})"
            )
        dtype = df.schema[column]
        if not any(dtype == a or (isinstance(a, type) and isinstance(dtype, a)) for a in allowed):
            raise DataError(
                f"{origin}: column {column!r} of the {table} table has type {dtype}, "
                f"expected {' or '.join(str(a) for a in allowed)}"
            )


_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_NUMERIC = _INTS + (pl.Float32, pl.Float64, pl.Boolean)


def _first_null_row(df: pl.DataFrame, column: str) -> int | None:
    if df[column].null_count() == 0:
        return None
    row = df[column].is_null().arg_max()
    assert row is not None  # the column holds a null
    return int(row)


def validate_raw(tables: RawTables) -> None:
    """Raise DataError naming the file, column and row for anything that would silently corrupt training."""
    origin = tables.origin or tables.name
    inter = tables.interactions
    if inter.height == 0:
        raise DataError(f"{origin}: the interactions table is empty")
    _require_columns(
        inter, {"user": (pl.Utf8, pl.String), "item": (pl.Utf8, pl.String), "timestamp": _INTS}, "interactions", origin
    )
    for column in ("user", "item", "timestamp"):
        row = _first_null_row(inter, column)
        if row is not None:
            raise DataError(f"{origin}: interactions row {row}: missing value in column {column!r}")
    if tables.timestamp_kind != "order":
        negative = inter["timestamp"] < 0
        if negative.any():
            row = int(cast(int, negative.arg_max()))
            raise DataError(f"{origin}: interactions row {row}: negative timestamp {inter['timestamp'][row]}")
    for label in tables.labels:
        _require_columns(inter, {label: _NUMERIC}, "interactions", origin)
        row = _first_null_row(inter, label)
        if row is not None:
            raise DataError(f"{origin}: interactions row {row}: missing value in label column {label!r}")
    if "split" in inter.columns:
        bad = inter.filter(~pl.col("split").is_in(list(SPLIT_NAMES)))
        if bad.height:
            raise DataError(f"{origin}: split column has value {bad['split'][0]!r}; expected one of {SPLIT_NAMES}")
    _require_columns(tables.items, {"item": (pl.Utf8, pl.String)}, "items", origin)
    _require_columns(tables.users, {"user": (pl.Utf8, pl.String)}, "users", origin)
    for field_name in tables.text_fields:
        if field_name not in tables.items.columns:
            raise DataError(f"{origin}: text field {field_name!r} is not a column of the items table")
    for table, key in ((tables.items, "item"), (tables.users, "user")):
        dup = table.filter(pl.col(key).is_duplicated())
        if dup.height:
            raise DataError(f"{origin}: {key} id {dup[key][0]!r} appears more than once in the {key}s table")
    # Unknown ids: an interaction whose item/user is missing from a non-empty side table.
    for table, key in ((tables.items, "item"), (tables.users, "user")):
        if table.height == 0:
            continue
        unknown = inter.with_row_index("row").filter(~pl.col(key).is_in(table[key].implode()))
        if unknown.height:
            first = unknown.row(0, named=True)
            raise DataError(
                f"{origin}: interactions row {first['row']}: unknown {key} id {first[key]!r} "
                f"(not in the {key}s table; {unknown.height} such rows)"
            )
